//! Tidy: rules of this house that the compiler does not check, read from `src/` as text
//! (the way rust-analyzer's tidy tests guard its rules). No module import cycle, at the
//! top level or between the files of one module; no file over [`MAX_CODE_LINES`] lines of
//! non-test code and no function over [`MAX_FN_LINES`] lines, tables aside ([`TABLES`]).
//!
//! `cargo test --test it tidy:: -- --nocapture` also prints the top-level import graph and
//! the largest files and functions.

mod graph;
mod lex;
mod size;

use std::path::Path;

use graph::Crate;
use size::{FileSize, FnSize};

/// Most code lines (outside tests, comments and blank lines) one file of `src/` may hold.
const MAX_CODE_LINES: usize = 400;

/// Most lines one function may span, from `fn` to its closing brace.
const MAX_FN_LINES: usize = 80;

/// Files (`src/…`) or functions (`src/…::name`, `Type::name` inside an impl) that are big
/// by nature, one entry per line of a table, exempt from the limits; each says why. An
/// entry that is no longer over its limit fails the test, so the list cannot go stale.
const TABLES: &[(&str, &str)] = &[(
    "src/http/schemas.rs",
    "one declaration per wire shape of the OpenAPI documents, no logic",
)];

/// Every `*.rs` file under `src/`, as (path under `src/`, text), in path order.
fn src_files() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
                out.push((rel, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// The reader's own guard: a file whose brackets do not balance once comments, literals
/// and test code are gone was misread (a literal form the lexer does not know), and the
/// graph built from it could not be trusted.
#[test]
fn every_file_reads_with_balanced_brackets() {
    let files = graph::files(&src_files());
    let unbalanced: Vec<&str> = files
        .iter()
        .filter(|f| {
            let mut stack = Vec::new();
            let balanced = f.src.toks.iter().all(|t| match t.text.as_str() {
                "(" | "[" | "{" if t.kind == lex::Kind::Punct => {
                    stack.push(t.text.clone());
                    true
                }
                ")" | "]" | "}" if t.kind == lex::Kind::Punct => {
                    let open = stack.pop();
                    open.as_deref()
                        == Some(match t.text.as_str() {
                            ")" => "(",
                            "]" => "[",
                            _ => "{",
                        })
                }
                _ => true,
            });
            !(balanced && stack.is_empty())
        })
        .map(|f| f.label.as_str())
        .collect();
    assert!(files.len() > 50, "src/ was not read: {} files", files.len());
    assert!(unbalanced.is_empty(), "misread: {unbalanced:?}");
}

#[test]
fn no_module_cycles() {
    let krate = Crate::new(&graph::files(&src_files()));
    // A reader that found nothing would find no cycle: make sure it read the crate.
    assert!(
        krate.modules.contains(&vec!["lifecycle".to_string()])
            && krate.modules.contains(&vec!["store".to_string()])
            && krate.uses.len() > 100,
        "src/ was not read: {} modules, {} uses",
        krate.modules.len(),
        krate.uses.len()
    );
    eprintln!("top-level import graph:\n{}", krate.top_level());
    let cycles = krate.cycles();
    if !cycles.is_empty() {
        let listed: String = cycles.iter().map(ToString::to_string).collect();
        panic!(
            "\n{} module import cycle(s) in src/:\n\n{listed}\n\
             Break each one: move what both sides need into a module both import (a leaf), \
             or pass the value in instead of importing back up.\n",
            cycles.len()
        );
    }
}

/// The `n` largest files and `m` largest functions, for the closing note of a change.
fn size_report(files: &[FileSize], fns: &[FnSize], n: usize, m: usize) -> String {
    let mut files: Vec<&FileSize> = files.iter().collect();
    files.sort_by(|a, b| b.code_lines.cmp(&a.code_lines).then(a.file.cmp(&b.file)));
    let mut fns: Vec<&FnSize> = fns.iter().collect();
    fns.sort_by(|a, b| {
        b.lines
            .cmp(&a.lines)
            .then((&a.file, a.line).cmp(&(&b.file, b.line)))
    });
    let mut out = String::from("largest files (code lines outside tests / all lines):\n");
    for f in files.iter().take(n) {
        out += &format!(
            "    {:>5} / {:>5}  {}\n",
            f.code_lines, f.total_lines, f.file
        );
    }
    out += "largest functions (lines):\n";
    for f in fns.iter().take(m) {
        out += &format!("    {:>5}  {}:{}  {}\n", f.lines, f.file, f.line, f.name);
    }
    out
}

/// What is over a limit and not in `tables`, and the entries of `tables` that are not
/// over one (stale), as messages.
fn over_limits(files: &[FileSize], fns: &[FnSize], tables: &[(&str, &str)]) -> Vec<String> {
    let mut over: Vec<(String, String)> = Vec::new();
    for f in files.iter().filter(|f| f.code_lines > MAX_CODE_LINES) {
        let why = format!("{} code lines (limit {MAX_CODE_LINES})", f.code_lines);
        over.push((f.file.clone(), why));
    }
    for f in fns.iter().filter(|f| f.lines > MAX_FN_LINES) {
        let why = format!(
            "{} lines, at line {} (limit {MAX_FN_LINES})",
            f.lines, f.line
        );
        over.push((format!("{}::{}", f.file, f.name), why));
    }
    let mut problems: Vec<String> = over
        .iter()
        .filter(|(key, _)| !tables.iter().any(|(t, _)| t == key))
        .map(|(key, why)| format!("{key}: {why}"))
        .collect();
    for (t, _) in tables {
        if !over.iter().any(|(key, _)| key == t) {
            problems.push(format!(
                "{t}: in TABLES but not over a limit; remove the entry"
            ));
        }
    }
    problems
}

#[test]
fn files_and_functions_stay_small() {
    let files = graph::files(&src_files());
    let sizes: Vec<FileSize> = files.iter().map(size::file_size).collect();
    let fns: Vec<FnSize> = files.iter().flat_map(size::functions).collect();
    assert!(
        fns.len() > 100,
        "src/ was not read: {} functions",
        fns.len()
    );
    eprintln!("{}", size_report(&sizes, &fns, 10, 15));
    let problems = over_limits(&sizes, &fns, TABLES);
    assert!(
        problems.is_empty(),
        "\nover the size limits (split it, or if it is a table add it to TABLES with why):\n    {}\n",
        problems.join("\n    ")
    );
}

#[test]
fn the_limits_apply_to_what_is_not_a_table() {
    let file = |name: &str, code_lines| FileSize {
        file: name.into(),
        code_lines,
        total_lines: code_lines * 2,
    };
    let func = |name: &str, lines| FnSize {
        file: "src/a.rs".into(),
        line: 7,
        name: name.into(),
        lines,
    };
    let files = [
        file("src/a.rs", MAX_CODE_LINES),
        file("src/big.rs", MAX_CODE_LINES + 1),
    ];
    let fns = [
        func("small", MAX_FN_LINES),
        func("T::long", MAX_FN_LINES + 1),
    ];
    assert_eq!(
        over_limits(&files, &fns, &[]),
        [
            format!(
                "src/big.rs: {} code lines (limit {MAX_CODE_LINES})",
                MAX_CODE_LINES + 1
            ),
            format!(
                "src/a.rs::T::long: {} lines, at line 7 (limit {MAX_FN_LINES})",
                MAX_FN_LINES + 1
            ),
        ]
    );
    let tables = [("src/big.rs", "a table"), ("src/a.rs::T::long", "a table")];
    assert!(over_limits(&files, &fns, &tables).is_empty());
    assert_eq!(
        over_limits(
            &files,
            &fns,
            &[
                ("src/a.rs::small", "stale"),
                ("src/big.rs", "t"),
                ("src/a.rs::T::long", "t")
            ]
        ),
        ["src/a.rs::small: in TABLES but not over a limit; remove the entry"]
    );
    let report = size_report(&files, &fns, 1, 1);
    let (big, long) = (MAX_CODE_LINES + 1, MAX_FN_LINES + 1);
    assert_eq!(
        report,
        format!(
            "largest files (code lines outside tests / all lines):\n    {big:>5} / {:>5}  src/big.rs\n\
             largest functions (lines):\n    {long:>5}  src/a.rs:7  T::long\n",
            big * 2
        )
    );
}

/// The names a module may use, as ARCHITECTURE.md's invariants put them: the domain
/// never knows the HTTP server (`axum`), `lifecycle` and `auth` make no HTTP request
/// (`reqwest`), only `store` speaks SQL (`sqlx`, `rusqlite`), and only the turn driver folds a
/// backend's events (`TurnEvent`). Each rule is (name, the top-level modules that may use
/// it).
const CRATE_RULES: &[(&str, &[&str])] = &[
    ("axum", &["http"]),
    ("sqlx", &["store"]),
    ("rusqlite", &["store"]),
    (
        "reqwest",
        &[
            "agent", "chronos", "cli", "config", "cron", "http", "outbound",
        ],
    ),
    ("TurnEvent", &["agent", "turn"]),
];

/// Where a file names a crate its module may not: `file:line: crate`, one per file and crate.
fn crate_rule_breaks(files: &[graph::File], rules: &[(&str, &[&str])]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let top = f.module.first().map_or("", String::as_str);
        for (krate, allowed) in rules {
            if allowed.contains(&top) {
                continue;
            }
            if let Some(t) = f.src.toks.iter().find(|t| t.ident() == Some(krate)) {
                out.push(format!("{}:{}: {krate}", f.label, t.line));
            }
        }
    }
    out
}

#[test]
fn modules_name_only_the_crates_their_layer_may() {
    let files = graph::files(&src_files());
    let breaks = crate_rule_breaks(&files, CRATE_RULES);
    assert!(
        breaks.is_empty(),
        "\na module names a crate its layer must not (see ARCHITECTURE.md, Invariants):\n    {}\n",
        breaks.join("\n    ")
    );
}

#[test]
fn crate_rules_catch_a_domain_module_naming_the_server() {
    let texts = [
        (
            "lifecycle/gate.rs".to_string(),
            "use axum::Router;\nfn f() { let s = \"sqlx\"; }".to_string(),
        ),
        ("http/api.rs".to_string(), "use axum::Json;".to_string()),
        (
            "cron/mod.rs".to_string(),
            "// sqlx in a comment\nfn g() { sqlx::query(\"\"); }".to_string(),
        ),
    ];
    let files = graph::files(&texts);
    assert_eq!(
        crate_rule_breaks(&files, CRATE_RULES),
        ["src/lifecycle/gate.rs:1: axum", "src/cron/mod.rs:2: sqlx"]
    );
}
