//! How big the library's files and functions are, test code left out.
//!
//! A file's size is its code lines: lines that hold a token outside `#[cfg(test)]` items
//! (comments and blank lines do not count; a multi-line string counts every line). A
//! function's size is its physical lines from `fn` to its closing brace, comments
//! included; a function inside an `impl` or `trait` is named `Type::name`.

use std::collections::BTreeSet;

use super::graph::File;
use super::lex::{Tok, matching};

/// One file's size.
#[derive(Debug)]
pub struct FileSize {
    pub file: String,
    pub code_lines: usize,
    pub total_lines: usize,
}

/// One function's size.
#[derive(Debug, PartialEq, Eq)]
pub struct FnSize {
    pub file: String,
    pub line: usize,
    pub name: String,
    pub lines: usize,
}

pub fn file_size(f: &File) -> FileSize {
    let lines: BTreeSet<usize> = f
        .src
        .toks
        .iter()
        .flat_map(|t| t.line..=t.end_line)
        .collect();
    FileSize {
        file: f.label.clone(),
        code_lines: lines.len(),
        total_lines: f.total_lines,
    }
}

/// Every function with a body in `f`, outside test code.
pub fn functions(f: &File) -> Vec<FnSize> {
    let toks = &f.src.toks;
    let mut out = Vec::new();
    let mut owners: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        if t.is("{") {
            depth += 1;
        } else if t.is("}") {
            depth = depth.saturating_sub(1);
            if owners.last().is_some_and(|(d, _)| *d == depth) {
                owners.pop();
            }
        } else if (t.is("impl") || t.is("trait")) && item_position(toks, i) {
            if let Some(name) = owner_name(toks, i) {
                owners.push((depth, name));
            }
        } else if t.is("fn")
            && let Some(name) = toks.get(i + 1).and_then(Tok::ident)
            && let Some(open) = body_start(toks, i + 2)
            && let Some(close) = matching(toks, open)
        {
            let owner = owners
                .last()
                .map(|(_, o)| format!("{o}::"))
                .unwrap_or_default();
            out.push(FnSize {
                file: f.label.clone(),
                line: t.line,
                name: format!("{owner}{name}"),
                lines: toks[close].line - t.line + 1,
            });
        }
    }
    out
}

/// An `impl` or `trait` keyword that starts an item (not `-> impl Trait`).
fn item_position(toks: &[Tok], i: usize) -> bool {
    i == 0
        || ["}", ";", "{", "]", ")", "unsafe", "pub"]
            .iter()
            .any(|p| toks[i - 1].is(p))
}

/// The type an `impl` block at `i` is for (`impl<T> Tr for a::Ty<T>` is `Ty`), or the
/// trait's name; `None` without a body.
fn owner_name(toks: &[Tok], i: usize) -> Option<String> {
    let end = (i + 1..toks.len()).find(|&k| toks[k].is("{") || toks[k].is(";"))?;
    if toks[end].is(";") {
        return None;
    }
    let mut header = &toks[i + 1..end];
    if toks[i].is("trait") {
        return header.first().and_then(Tok::ident).map(str::to_string);
    }
    if header.first().is_some_and(|t| t.is("<")) {
        let mut angle = 0i32;
        let close = header.iter().position(|t| {
            angle += i32::from(t.is("<")) - i32::from(t.is(">"));
            angle == 0
        })?;
        header = &header[close + 1..];
    }
    if let Some(at) = header.iter().position(|t| t.is("for")) {
        header = &header[at + 1..];
    }
    let start = header
        .iter()
        .position(|t| t.ident().is_some_and(|w| w != "dyn" && w != "mut"))?;
    let mut name = None;
    for pair in header[start..].chunks(2) {
        name = pair[0].ident();
        if !pair.get(1).is_some_and(|t| t.is("::")) {
            break;
        }
    }
    name.map(str::to_string)
}

/// The `{` that opens the body of a function whose signature continues at `j`; `None`
/// when a `;` ends it first (a declaration in a trait or an `extern` block).
fn body_start(toks: &[Tok], j: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(j) {
        if t.is("(") || t.is("[") {
            depth += 1;
        } else if t.is(")") || t.is("]") {
            depth -= 1;
        } else if depth == 0 && t.is("{") {
            return Some(k);
        } else if depth == 0 && t.is(";") {
            return None;
        }
    }
    None
}

fn measured(src: &str) -> (FileSize, Vec<FnSize>) {
    let files = super::graph::files(&[("a.rs".to_string(), src.to_string())]);
    (file_size(&files[0]), functions(&files[0]))
}

#[test]
fn functions_are_measured_from_fn_to_their_closing_brace() {
    let src = "\
trait Tr {
    fn declared(&self) -> [u8; 2];
    fn provided(&self) {}
}
impl<T: Into<u8>> std::fmt::Debug for Wrapper<T> {
    fn fmt(&self) -> impl Sized {
        fn nested() {}
        // a comment line counts
    }
}
pub fn free(
    x: u8,
) -> u8 {
    let f = |y: u8| -> u8 { y };
    f(x)
}
";
    let names: Vec<(String, usize, usize)> = measured(src)
        .1
        .into_iter()
        .map(|f| (f.name, f.line, f.lines))
        .collect();
    assert_eq!(
        names,
        [
            ("Tr::provided".to_string(), 3, 1),
            ("Wrapper::fmt".to_string(), 6, 4),
            ("Wrapper::nested".to_string(), 7, 1),
            ("free".to_string(), 11, 6),
        ]
    );
}

#[test]
fn a_file_counts_code_lines_outside_test_code() {
    let src = "\
//! doc

fn a() {}
const S: &str = \"one
two\";
#[cfg(test)]
mod tests {
    fn t() {}
}
";
    let (size, fns) = measured(src);
    assert_eq!((size.code_lines, size.total_lines), (3, 9));
    assert_eq!(fns.len(), 1, "{fns:?}");
}
