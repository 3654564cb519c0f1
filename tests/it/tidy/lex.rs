//! Rust source as tokens with their lines, comments gone, literals opaque, and every item
//! marked `#[cfg(test)]` taken out.
//!
//! Just enough of Rust's lexical grammar for the tidy rules: identifiers, `::`, `->`, `=>`,
//! single-character punctuation, and literals (strings of every kind, raw or not, chars
//! and numbers) kept as one opaque token, so a path written inside a string is not a path.
//! Comments (nested block comments included) are dropped, doc comments too: an intra-doc
//! link is not an import. A lifetime is not mistaken for a char literal.

/// What a token is; only identifiers and punctuation matter to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ident,
    Punct,
    Literal,
}

/// One token and the lines it spans (a multi-line string spans several).
#[derive(Debug, Clone)]
pub struct Tok {
    pub kind: Kind,
    pub text: String,
    pub line: usize,
    pub end_line: usize,
}

impl Tok {
    pub fn is(&self, text: &str) -> bool {
        self.kind != Kind::Literal && self.text == text
    }

    pub fn ident(&self) -> Option<&str> {
        (self.kind == Kind::Ident).then_some(self.text.as_str())
    }
}

fn ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into tokens.
pub fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let start = i;
        let kind = if c[i].is_whitespace() {
            i += 1;
            None
        } else if c[i..].starts_with(&['/', '/']) {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            None
        } else if c[i..].starts_with(&['/', '*']) {
            i = block_comment_end(&c, i);
            None
        } else if let Some(end) = string_end(&c, i) {
            i = end;
            Some(Kind::Literal)
        } else if c[i] == '\'' {
            let (end, kind) = quote_end(&c, i);
            i = end;
            Some(kind)
        } else if c[i..].starts_with(&['r', '#']) && c.get(i + 2).is_some_and(|&x| ident_start(x)) {
            // A raw identifier `r#match` is the identifier `match`.
            i += 2;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            Some(Kind::Ident)
        } else if ident_start(c[i]) {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            Some(Kind::Ident)
        } else if c[i].is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            Some(Kind::Literal)
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            i += if matches!(two.as_str(), "::" | "->" | "=>") {
                2
            } else {
                1
            };
            Some(Kind::Punct)
        };
        let newlines = c[start..i].iter().filter(|&&x| x == '\n').count();
        if let Some(kind) = kind {
            let mut text: String = c[start..i].iter().collect();
            if kind == Kind::Ident {
                text = text.trim_start_matches("r#").to_string();
            }
            out.push(Tok {
                kind,
                text,
                line,
                end_line: line + newlines,
            });
        }
        line += newlines;
    }
    out
}

/// The index just past a (nested) block comment opening at `i`.
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        if c[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if c[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// When a string literal (`"…"`, `b"…"`, `c"…"`, `r#"…"#`, `br"…"`, `cr"…"`) or a byte
/// char (`b'x'`) starts at `i`, the index just past it.
fn string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(c.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if c.get(j) == Some(&'\'') && j > i {
        return Some(quote_end(c, j).0);
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') || (!raw && hashes > 0) {
        return None;
    }
    j += 1;
    while j < c.len() {
        if !raw && c[j] == '\\' {
            j += 2;
        } else if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&x| x == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        } else {
            j += 1;
        }
    }
    Some(c.len())
}

/// A `'` at `i` opens a char literal (`'x'`, `'\n'`, `'\u{7}'`) or a lifetime or label
/// (`'a`): the index just past it and which of the two it is.
fn quote_end(c: &[char], i: usize) -> (usize, Kind) {
    if c.get(i + 1) == Some(&'\\') {
        let mut j = i + 3;
        while j < c.len() && c[j] != '\'' {
            j += 1;
        }
        return (j + 1, Kind::Literal);
    }
    if c.get(i + 2) == Some(&'\'') {
        return (i + 3, Kind::Literal);
    }
    let mut j = i + 1;
    while j < c.len() && ident_char(c[j]) {
        j += 1;
    }
    (j, Kind::Punct)
}

/// A file's tokens without its test code.
#[derive(Debug, Default)]
pub struct Source {
    /// The tokens outside `#[cfg(test)]` items.
    pub toks: Vec<Tok>,
    /// Child modules declared `#[cfg(test)] mod name;`: their files are test code.
    pub test_mods: Vec<String>,
    /// The whole file is test code (`#![cfg(test)]`).
    pub test_only: bool,
}

/// Keywords that start an item: what follows a `#[cfg(test)]` is skipped as a whole item
/// (to its `;` or its closing `}`), else as a field, arm or statement.
const ITEM_KEYWORDS: &[&str] = &[
    "async",
    "const",
    "enum",
    "extern",
    "fn",
    "impl",
    "macro_rules",
    "mod",
    "static",
    "struct",
    "trait",
    "type",
    "union",
    "unsafe",
    "use",
];

/// Lexes `src` and takes out what `#[cfg(test)]` marks.
pub fn source(src: &str) -> Source {
    let toks = tokens(src);
    let mut out = Source::default();
    let mut i = 0;
    while i < toks.len() {
        if seq(&toks, i, &["#", "!", "[", "cfg", "(", "test", ")", "]"]) {
            out.test_only = true;
            return out;
        }
        if !seq(&toks, i, &["#", "[", "cfg", "(", "test", ")", "]"]) {
            out.toks.push(toks[i].clone());
            i += 1;
            continue;
        }
        let (end, test_mod) = cfg_test_item_end(&toks, i + 7);
        out.test_mods.extend(test_mod);
        i = end;
    }
    out
}

/// The tokens from `i` on are `want`.
fn seq(toks: &[Tok], i: usize, want: &[&str]) -> bool {
    toks.len() >= i + want.len() && want.iter().zip(&toks[i..]).all(|(w, t)| t.is(w))
}

/// The index past the item, field or statement that starts at `i` (after its
/// `#[cfg(test)]`), and the module's name when it is `mod name;`.
fn cfg_test_item_end(toks: &[Tok], mut i: usize) -> (usize, Option<String>) {
    // Further attributes belong to the same item.
    while toks.get(i).is_some_and(|t| t.is("#")) {
        i = matching(toks, i + 1).map_or(toks.len(), |e| e + 1);
    }
    let mut first = i;
    if toks.get(first).is_some_and(|t| t.is("pub")) {
        first += 1;
        if toks.get(first).is_some_and(|t| t.is("(")) {
            first = matching(toks, first).map_or(toks.len(), |e| e + 1);
        }
    }
    let item = toks
        .get(first)
        .and_then(Tok::ident)
        .is_some_and(|k| ITEM_KEYWORDS.contains(&k));
    let block = toks.get(first).is_some_and(|t| t.is("{"));
    let mut depth = 0i32;
    let mut k = i;
    while k < toks.len() {
        let t = &toks[k];
        if t.is("(") || t.is("[") || t.is("{") {
            depth += 1;
        } else if t.is(")") || t.is("]") || t.is("}") {
            depth -= 1;
            if depth < 0 {
                return (k, None);
            }
            if depth == 0 && t.is("}") && (item || block) {
                return (k + 1, None);
            }
        } else if depth == 0 && t.is(";") {
            let name =
                (toks[first].is("mod") && k == first + 2).then(|| toks[first + 1].text.clone());
            return (k + 1, name);
        } else if depth == 0 && t.is(",") && !item {
            return (k + 1, None);
        }
        k += 1;
    }
    (k, None)
}

/// The index of the bracket that closes the one at `open`.
pub fn matching(toks: &[Tok], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.is("(") || t.is("[") || t.is("{") {
            depth += 1;
        } else if t.is(")") || t.is("]") || t.is("}") {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

#[test]
fn comments_strings_and_chars_are_not_code() {
    let src =
        "a // b\n/* c /* d */ e */ f \"g\\\"h\" r#\"i\"j\"# br\"k\" b'l' '\"' m 'n: '\\'' o::p\n";
    let idents: Vec<_> = tokens(src)
        .into_iter()
        .filter(|t| t.kind == Kind::Ident)
        .map(|t| format!("{}@{}", t.text, t.line))
        .collect();
    assert_eq!(idents, ["a@1", "f@2", "m@2", "o@2", "p@2"]);
    let spans: Vec<_> = tokens("x \"one\ntwo\nthree\" y")
        .iter()
        .map(|t| (t.line, t.end_line))
        .collect();
    assert_eq!(spans, [(1, 1), (1, 3), (3, 3)]);
}

#[test]
fn test_items_are_taken_out() {
    let src = "\
keep1
#[cfg(test)]
mod tests { drop1 { drop2 } }
#[cfg(test)]
#[derive(Debug)]
pub(crate) fn helper() -> Result<A, B> { drop3 }
struct S { keep2: u8, #[cfg(test)] drop4: u8, keep3: u8 }
#[cfg(test)]
mod more;
#[cfg(not(test))] keep4
";
    let s = source(src);
    let idents: Vec<_> = s.toks.iter().filter_map(Tok::ident).collect();
    assert_eq!(
        idents,
        [
            "keep1", "struct", "S", "keep2", "u8", "keep3", "u8", "cfg", "not", "test", "keep4"
        ]
    );
    assert_eq!(s.test_mods, ["more"]);
    assert!(!s.test_only);
    assert!(source("//! doc\n#![cfg(test)]\nuse crate::a::B;").test_only);
}
