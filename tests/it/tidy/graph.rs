//! The crate's module import graph, read from the text of its files, and its cycles.
//!
//! A file is a module by its path (`a/b.rs` and `a/b/mod.rs` are `a::b`, `lib.rs` the
//! root; `main.rs` is another crate and is left out). Every `crate::…` and `super::…` path
//! outside test code — in a `use` (groups expanded, `self` and `as` understood) or in code —
//! is followed to the longest module it names; a path to the module itself, an ancestor or
//! a descendant is no edge. An edge counts at one scale: among the children of the two
//! modules' nearest common ancestor (the top level for `a::x -> b::y`, the files inside
//! `a` for `a::x -> a::y`), and a cycle is a strongly connected component there.
//! It reads text, not the compiler's view: a path built by a macro is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::lex::{self, Source, Tok};

/// A module path, the root being empty.
pub type Module = Vec<String>;

/// A file of the library, its test code taken out.
#[derive(Debug)]
pub struct File {
    /// The path shown in messages (`src/a/b.rs`).
    pub label: String,
    pub module: Module,
    pub src: Source,
    pub total_lines: usize,
}

/// The library's files from `(path under src/, text)` pairs: test files left out (those
/// declared `#[cfg(test)] mod name;`, what is under them, and `#![cfg(test)]` files).
pub fn files(texts: &[(String, String)]) -> Vec<File> {
    let all: Vec<File> = texts
        .iter()
        .filter_map(|(rel, text)| {
            Some(File {
                label: format!("src/{rel}"),
                module: module_of(rel)?,
                src: lex::source(text),
                total_lines: text.lines().count(),
            })
        })
        .collect();
    let mut test_roots: Vec<Module> = Vec::new();
    for f in &all {
        if f.src.test_only {
            test_roots.push(f.module.clone());
        }
        for name in &f.src.test_mods {
            test_roots.push(child(&f.module, name));
        }
    }
    all.into_iter()
        .filter(|f| !test_roots.iter().any(|t| f.module.starts_with(t)))
        .collect()
}

fn child(m: &Module, name: &str) -> Module {
    let mut c = m.clone();
    c.push(name.to_string());
    c
}

/// The module a file under `src/` is; `None` for `main.rs`, the binary's own crate.
fn module_of(rel: &str) -> Option<Module> {
    let stem = rel.strip_suffix(".rs")?;
    let mut parts: Module = stem.split('/').map(str::to_string).collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("mod") => {
            parts.pop();
        }
        Some("lib") if parts.len() == 1 => parts.clear(),
        _ => {}
    }
    Some(parts)
}

/// Shows a module the way paths are written (`store::jobs`; the root is `crate`).
pub fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// One crate-internal path that names another module: an edge of the graph.
#[derive(Debug, Clone)]
pub struct Use {
    pub from: Module,
    pub target: Module,
    /// The first segment after the target module (`(module)` when the path ends there).
    pub item: String,
    pub file: String,
    pub line: usize,
}

/// The modules and the edges between them.
#[derive(Debug, Default)]
pub struct Crate {
    pub modules: BTreeSet<Module>,
    pub uses: Vec<Use>,
}

impl Crate {
    pub fn new(files: &[File]) -> Self {
        let modules: BTreeSet<Module> = files.iter().map(|f| f.module.clone()).collect();
        let mut uses = Vec::new();
        for f in files {
            for (full, line) in paths(&f.src.toks, &f.module) {
                let Some(target) = (1..=full.len())
                    .rev()
                    .map(|k| full[..k].to_vec())
                    .find(|m| modules.contains(m))
                else {
                    continue;
                };
                if f.module.starts_with(&target) || target.starts_with(&f.module) {
                    continue; // the module itself, an ancestor or a descendant
                }
                uses.push(Use {
                    item: full
                        .get(target.len())
                        .cloned()
                        .unwrap_or_else(|| "(module)".into()),
                    from: f.module.clone(),
                    target,
                    file: f.label.clone(),
                    line,
                });
            }
        }
        Self { modules, uses }
    }

    /// The edges at each scale: scope -> from -> to -> the uses that make the edge.
    fn scales(&self) -> BTreeMap<Module, BTreeMap<Module, BTreeMap<Module, Vec<&Use>>>> {
        let mut scales: BTreeMap<_, BTreeMap<_, BTreeMap<_, Vec<_>>>> = BTreeMap::new();
        for u in &self.uses {
            let p = u
                .from
                .iter()
                .zip(&u.target)
                .take_while(|(a, b)| a == b)
                .count();
            scales
                .entry(u.from[..p].to_vec())
                .or_default()
                .entry(u.from[..=p].to_vec())
                .or_default()
                .entry(u.target[..=p].to_vec())
                .or_default()
                .push(u);
        }
        scales
    }

    /// Every cycle, top level first, then inside each module in order.
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut out = Vec::new();
        for (scope, adj) in self.scales() {
            let graph: BTreeMap<&Module, Vec<&Module>> = adj
                .iter()
                .map(|(a, tos)| (a, tos.keys().collect()))
                .collect();
            for members in sccs(&graph) {
                let mut edges: Vec<Use> = Vec::new();
                for a in &members {
                    for b in &members {
                        let uses = adj.get(a).and_then(|tos| tos.get(b));
                        edges.extend(uses.into_iter().flatten().map(|&u| u.clone()));
                    }
                }
                out.push(Cycle {
                    scope: scope.clone(),
                    members,
                    edges,
                });
            }
        }
        out.sort_by(|a, b| {
            (a.scope.len(), &a.scope, &a.members).cmp(&(b.scope.len(), &b.scope, &b.members))
        });
        out
    }

    /// The top-level graph, one line per module: what it imports.
    pub fn top_level(&self) -> String {
        let mut out = String::new();
        if let Some(adj) = self.scales().get(&Vec::new()) {
            for (a, tos) in adj {
                let names: Vec<String> = tos.keys().map(|b| show(b)).collect();
                out += &format!("    {} -> {}\n", show(a), names.join(", "));
            }
        }
        out
    }
}

/// Modules that import each other, directly or around a loop, at one scale.
#[derive(Debug)]
pub struct Cycle {
    pub scope: Module,
    pub members: Vec<Module>,
    /// Every use from one member to another.
    pub edges: Vec<Use>,
}

impl Cycle {
    /// Where the cycle is: `top-level` or `inside a`.
    pub fn scope(&self) -> String {
        if self.scope.is_empty() {
            "top-level".to_string()
        } else {
            format!("inside {}", show(&self.scope))
        }
    }
}

impl fmt::Display for Cycle {
    /// The title, then one line per imported name: where it is first used and how often.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> = self.members.iter().map(|m| show(m)).collect();
        writeln!(f, "cycle ({}): {}", self.scope(), members.join(" <-> "))?;
        let mut named: BTreeMap<(String, String), Vec<&Use>> = BTreeMap::new();
        for u in &self.edges {
            let to = format!("{}::{}", show(&u.target), u.item);
            named.entry((show(&u.from), to)).or_default().push(u);
        }
        for ((from, to), uses) in named {
            let more = match uses.len() {
                1 => String::new(),
                n => format!(", +{} more", n - 1),
            };
            writeln!(
                f,
                "    {from} -> {to}  ({}:{}{more})",
                uses[0].file, uses[0].line
            )?;
        }
        Ok(())
    }
}

/// The strongly connected components with more than one node (Tarjan).
fn sccs(graph: &BTreeMap<&Module, Vec<&Module>>) -> Vec<Vec<Module>> {
    #[derive(Default)]
    struct Walk<'a> {
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(v: &'a Module, graph: &BTreeMap<&'a Module, Vec<&'a Module>>, w: &mut Walk<'a>) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        for &next in graph.get(v).into_iter().flatten() {
            if !w.index.contains_key(next) {
                visit(next, graph, w);
                let low = w.low[v].min(w.low[next]);
                w.low.insert(v, low);
            } else if w.stack.contains(&next) {
                let low = w.low[v].min(w.index[next]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let at = w.stack.iter().position(|&m| m == v).unwrap_or(0);
            let mut comp: Vec<Module> = w.stack.drain(at..).cloned().collect();
            if comp.len() > 1 {
                comp.sort();
                w.out.push(comp);
            }
        }
    }
    let mut walk = Walk::default();
    for &v in graph.keys() {
        if !walk.index.contains_key(v) {
            visit(v, graph, &mut walk);
        }
    }
    walk.out
}

/// Every `crate::`/`super::` path in `toks` as (absolute segments, line), for a file that
/// is module `me`; `super` is resolved from the inline module it is written in.
fn paths(toks: &[Tok], me: &Module) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        if t.is("{") {
            depth += 1;
        } else if t.is("}") {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(d, _)| *d == depth) {
                inline.pop();
            }
        } else if t.is("mod")
            && let Some(name) = toks.get(i + 1).and_then(Tok::ident)
            && toks.get(i + 2).is_some_and(|t| t.is("{"))
        {
            inline.push((depth, name.to_string()));
        } else if (t.is("crate") || t.is("super"))
            && toks.get(i + 1).is_some_and(|n| n.is("::"))
            && !(i > 0 && toks[i - 1].is("::"))
        {
            let here: Module = me
                .iter()
                .cloned()
                .chain(inline.iter().map(|(_, n)| n.clone()))
                .collect();
            let mut leaves = Vec::new();
            i = tree(toks, i, Vec::new(), &mut leaves);
            out.extend(
                leaves
                    .into_iter()
                    .map(|(segs, line)| (absolute(&here, &segs), line)),
            );
            continue;
        }
        i += 1;
    }
    out
}

/// Reads one use tree (or a path in code) from `i`, below `prefix`; pushes each leaf path
/// with its line and returns the index after the tree.
fn tree(
    toks: &[Tok],
    mut i: usize,
    mut path: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut line = toks.get(i).map_or(0, |t| t.line);
    while let Some(t) = toks.get(i) {
        if t.is("{") {
            i += 1;
            while let Some(t) = toks.get(i) {
                if t.is("}") {
                    return i + 1;
                }
                let next = if t.is(",") {
                    i + 1
                } else {
                    tree(toks, i, path.clone(), out)
                };
                i = next.max(i + 1);
            }
            return i;
        }
        if t.is("*") {
            i += 1;
            break;
        }
        let Some(seg) = t.ident() else { break };
        if seg == "as" {
            break;
        }
        if seg != "self" {
            path.push(seg.to_string());
        }
        line = t.line;
        i += 1;
        if !toks.get(i).is_some_and(|t| t.is("::")) {
            break;
        }
        i += 1;
    }
    if toks.get(i).is_some_and(|t| t.is("as")) {
        i += 2;
    }
    out.push((path, line));
    i
}

/// The absolute module path of `segs` (starting `crate` or `super`) written in `here`.
fn absolute(here: &Module, segs: &[String]) -> Vec<String> {
    match segs.first().map(String::as_str) {
        Some("super") => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let keep = here.len().saturating_sub(ups);
            here[..keep].iter().chain(&segs[ups..]).cloned().collect()
        }
        _ => segs[1..].to_vec(),
    }
}

fn check_paths(me: &str, src: &str, expected: &[&str]) {
    let me: Module = me
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let got: Vec<String> = paths(&lex::source(src).toks, &me)
        .into_iter()
        .map(|(p, line)| format!("{}@{line}", p.join("::")))
        .collect();
    assert_eq!(got, expected, "paths in {src:?}");
}

#[test]
fn paths_in_uses_and_code() {
    check_paths(
        "a::b",
        "use crate::x::{y::{Z, W as V}, self, *};",
        &["x::y::Z@1", "x::y::W@1", "x@1", "x@1"],
    );
    check_paths(
        "a::b",
        "use super::c::F;\nuse super::super::x::y::G;",
        &["a::c::F@1", "x::y::G@2"],
    );
    check_paths("a", "use super::x::H;", &["x::H@1"]);
    check_paths(
        "a::b",
        "fn f() -> u8 { crate::x::g::<u8>() as u8 + crate::x::K }",
        &["x::g@1", "x::K@1"],
    );
    check_paths(
        "a::b",
        "use crate::{\n    x::P,\n    y::Q,\n};",
        &["x::P@2", "y::Q@3"],
    );
    check_paths(
        "a::b",
        "pub(crate) fn f() {} pub(super) struct S; $crate::x::M!()",
        &["x::M@1"],
    );
    check_paths(
        "a::b",
        "mod inner { use super::super::c::I; }",
        &["a::c::I@1"],
    );
    check_paths(
        "a::b",
        "'l: loop { let q = '\"'; crate::x::L }",
        &["x::L@1"],
    );
}

#[test]
fn paths_in_comments_strings_and_test_code_are_not_read() {
    let src = r###"
        // use crate::x::A;
        /// [`crate::x::B`]
        /* crate::x::C /* nested */ crate::x::D */
        const S: &str = "crate::x::E \" crate::x::F";
        const R: &str = r#"crate::x::G "quoted" crate::x::H"#;
        const BYTES: &[u8] = br"crate::x::I";
        #[cfg(test)]
        mod tests { use crate::x::J; }
        #[cfg(test)]
        fn helper() { crate::x::K(); }
        use crate::x::Kept;
    "###;
    check_paths("a", src, &["x::Kept@12"]);
}

fn krate(list: &[(&str, &str)]) -> Crate {
    let texts: Vec<(String, String)> = list
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    Crate::new(&files(&texts))
}

fn rendered(c: &Crate) -> Vec<String> {
    c.cycles().iter().map(|c| c.to_string()).collect()
}

#[test]
fn a_cycle_between_two_modules_is_reported_with_its_uses() {
    let c = krate(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        (
            "a.rs",
            "use crate::b::X;\nfn f() { crate::b::X::new(); crate::c::Y }",
        ),
        ("b.rs", "//! b\n\nuse crate::a::{self, Z};"),
        ("c.rs", ""),
    ]);
    assert_eq!(
        rendered(&c),
        [
            "cycle (top-level): a <-> b\n    a -> b::X  (src/a.rs:1, +1 more)\n    b -> a::(module)  (src/b.rs:3)\n    b -> a::Z  (src/b.rs:3)\n"
        ]
    );
}

#[test]
fn no_cycle_in_a_chain() {
    let c = krate(&[
        ("lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("a.rs", "use crate::b::X;"),
        ("b/mod.rs", "use crate::c::Y; pub mod inner;"),
        ("b/inner.rs", "use super::super::c::Z; use crate::b::W;"),
        ("c.rs", "use crate::{self as root};"),
    ]);
    assert_eq!(c.uses.len(), 3, "{:?}", c.uses);
    assert!(c.cycles().is_empty());
    assert_eq!(c.top_level(), "    a -> b\n    b -> c\n");
}

#[test]
fn a_cycle_between_sibling_files_is_reported_inside_their_parent() {
    let c = krate(&[
        ("lib.rs", "pub mod s; pub mod t;"),
        ("s/mod.rs", "mod x; mod y; pub use x::T;"),
        ("s/x.rs", "use super::y::U;"),
        ("s/y.rs", "use crate::s::x::{T, V};\nuse crate::t::W;"),
        ("t.rs", "use crate::s::T;"),
    ]);
    assert_eq!(
        rendered(&c),
        [
            "cycle (top-level): s <-> t\n    s::y -> t::W  (src/s/y.rs:2)\n    t -> s::T  (src/t.rs:1)\n",
            "cycle (inside s): s::x <-> s::y\n    s::x -> s::y::U  (src/s/x.rs:1)\n    s::y -> s::x::T  (src/s/y.rs:1)\n    s::y -> s::x::V  (src/s/y.rs:1)\n",
        ]
    );
}

#[test]
fn uses_in_test_modules_and_test_files_make_no_cycle() {
    let c = krate(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::b::X;"),
        (
            "b.rs",
            "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n#[cfg(test)]\nmod more;",
        ),
        ("b/more.rs", "use crate::a::Z;"),
        ("b/more/deep.rs", "use crate::a::Z;"),
    ]);
    assert_eq!(
        c.modules.len(),
        3,
        "test files are not modules: {:?}",
        c.modules
    );
    assert!(c.cycles().is_empty(), "{:?}", rendered(&c));
}

#[test]
fn paths_in_comments_and_strings_make_no_cycle() {
    let c = krate(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::b::X;"),
        (
            "b.rs",
            "// use crate::a::Y;\nconst S: &str = \"crate::a::Z\";\n/* crate::a::W */",
        ),
    ]);
    assert!(c.cycles().is_empty(), "{:?}", rendered(&c));
}
