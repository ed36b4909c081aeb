//! The one-direction dependency check (issue 24): root (the composition) → `api` (HTTP) →
//! domain → infrastructure. It reads every module path in `src/` — `use` trees, inline
//! `crate::…`, `super::…` and `self::…` paths in code, types, macro bodies and attributes, test
//! modules included — resolves each against the module the text is in, and fails on
//! (a) a module below api that names api, (b) a module that names a layer above its own,
//! (c) a cycle between units of one layer, and a module the layer table does not cover.
//!
//! No parser crate: a small lexer drops comments and literals, so text *about* a path (docs,
//! messages, log targets) never counts, and the tokens left are enough to follow `use` trees and
//! `mod name { … }` blocks. A path that reaches our code only through a name brought in by `use`
//! is counted at that `use`, except when the name is a parent module (`use crate::store;` then
//! `store::kv::Kv`): then the path is counted where it is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// The layers, lowest first: a module may name its own layer or one below it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Layer {
    Infrastructure,
    Domain,
    Api,
    Root,
}

use Layer::{Api, Domain, Infrastructure, Root};

/// The pseudo-module of `src/main.rs`, the binary (it names the library as `localhostd::`).
const MAIN: &str = "main";

/// Every module belongs to the longest entry that prefixes its path; the entry is its unit.
/// Paths inside one unit are free; between units of one layer they must not form a cycle. A
/// module that is a proper prefix of entries (the crate root, `store`, `jobs`, `ops`) is a
/// parent: it only declares modules, and sits in the lowest layer it contains, so any real path
/// in it must point there or below. Any other module missing here is an error.
const LAYERS: &[(&str, Layer)] = &[
    ("daemon", Root),
    ("cli", Root),
    ("adminctl", Root),
    (MAIN, Root),
    ("api", Api),
    ("store::kv", Domain),
    ("store::files", Domain),
    ("store::programs", Domain),
    ("store::views", Domain),
    ("store::auth", Domain),
    ("store::audit", Domain),
    ("jobs::data", Domain),
    ("jobs::exec", Domain),
    ("jobs::runtimes", Domain),
    ("jobs::terminals", Domain),
    ("ops::metrics", Domain),
    ("ops::backup", Domain),
    ("ops::health", Domain),
    ("ops::system", Domain),
    ("ops::processes", Domain),
    ("ops::tunnels", Domain),
    ("ops::seed_import", Domain),
    ("util", Infrastructure),
    ("config", Infrastructure),
    ("logging", Infrastructure),
    ("error", Infrastructure),
    ("systemd", Infrastructure),
    ("store::db", Infrastructure),
    ("store::stored", Infrastructure),
    ("store::pins", Infrastructure),
    ("jobs::sandbox", Infrastructure),
];

/// One broken rule, where it is and what it names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    /// `src/…:line`.
    at: String,
    /// "a" (below api names api), "b" (names a higher layer), "c" (cycle in a layer),
    /// "unknown" (not in the layer table).
    rule: &'static str,
    /// The path as written; for a cycle, its units in order; for an unknown module, its path.
    path: String,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ({}) {}", self.at, self.rule, self.message)
    }
}

/// Checks the crate whose sources are in `src`.
fn check(src: &Path) -> Vec<Violation> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    let mut scan = Scan::default();
    for path in &files {
        let rel = path.strip_prefix(src).unwrap_or(path);
        let Some(module) = module_of(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let shown = format!("src/{}", rel.display());
        let root = if module.first().map(String::as_str) == Some(MAIN) {
            vec![MAIN.to_owned()]
        } else {
            Vec::new()
        };
        scan.file(&shown, module, root, &lex(&text));
    }
    scan.evaluate()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    // A directory that cannot be read must fail the check, not pass it with nothing read.
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for e in entries {
        let p = e
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// src/lib.rs = the crate root, src/main.rs = the binary, src/a/mod.rs = a, src/a/b.rs = a::b.
fn module_of(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        (true, "lib") => {}
        (true, "main") => parts.push(MAIN.to_owned()),
        (_, "mod") => {}
        _ => parts.push(stem.to_owned()),
    }
    Some(parts)
}

// ---------------------------------------------------------------------------------------------
// Lexer: identifiers, `::` and single punctuation; comments, literals and lifetimes dropped.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            // Line comments, `///` and `//!` docs alike.
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_quoted(&c, i, &mut line);
        } else if ch == '\'' {
            i = skip_char_or_lifetime(&c, i, &mut line);
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let tok_line = line;
            match (word.as_str(), at(i)) {
                ("b" | "c", '"') => i = skip_quoted(&c, i, &mut line),
                ("b", '\'') => i = skip_char_or_lifetime(&c, i, &mut line),
                ("r" | "br" | "cr", '"' | '#') => {
                    let mut j = i;
                    while at(j) == '#' {
                        j += 1;
                    }
                    if at(j) == '"' {
                        i = skip_raw(&c, j, j - i, &mut line);
                    } else if word == "r" && j == i + 1 && is_ident_start(at(j)) {
                        // A raw identifier (`r#type`): never a keyword.
                        let s = j;
                        while j < c.len() && is_ident_char(c[j]) {
                            j += 1;
                        }
                        let raw: String = c[s..j].iter().collect();
                        out.push(Token {
                            tok: Tok::Ident(format!("r#{raw}")),
                            line: tok_line,
                        });
                        i = j;
                    } else {
                        out.push(Token {
                            tok: Tok::Ident(word),
                            line: tok_line,
                        });
                    }
                }
                _ => out.push(Token {
                    tok: Tok::Ident(word),
                    line: tok_line,
                }),
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else if ch == '$'
            && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e'])
            && !is_ident_char(at(i + 6))
        {
            // `$crate` in a macro body is the crate root, like `crate`.
            out.push(Token {
                tok: Tok::Ident("crate".to_owned()),
                line,
            });
            i += 6;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// From the opening `"` of a (byte, C) string to just past its closing quote.
fn skip_quoted(c: &[char], open: usize, line: &mut usize) -> usize {
    let mut j = open + 1;
    while j < c.len() {
        match c[j] {
            '\\' => {
                *line += usize::from(c.get(j + 1) == Some(&'\n'));
                j += 2;
            }
            '"' => return j + 1,
            '\n' => {
                *line += 1;
                j += 1;
            }
            _ => j += 1,
        }
    }
    c.len()
}

/// From the opening `"` of a raw string with `hashes` `#`s to just past its end.
fn skip_raw(c: &[char], open: usize, hashes: usize, line: &mut usize) -> usize {
    let mut j = open + 1;
    while j < c.len() {
        if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        *line += usize::from(c[j] == '\n');
        j += 1;
    }
    c.len()
}

/// At a `'`: a char literal (`'x'`, `'\''`, `'\u{1F600}'`) or a lifetime or label (`'a`,
/// `'static`, `'outer:`), which is never followed by a closing quote after one char.
fn skip_char_or_lifetime(c: &[char], open: usize, line: &mut usize) -> usize {
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    if at(open + 1) == '\\' {
        let mut j = open + 3;
        while j < c.len() && c[j] != '\'' {
            j += 1;
        }
        return j + 1;
    }
    if at(open + 2) == '\'' {
        *line += usize::from(at(open + 1) == '\n');
        return open + 3;
    }
    let mut j = open + 1;
    while j < c.len() && is_ident_char(c[j]) {
        j += 1;
    }
    j
}

// ---------------------------------------------------------------------------------------------
// Scanner: modules, `use` leaves and inline paths, each with the module it is written in.

/// One path written in the source.
#[derive(Clone, Debug)]
struct Written {
    file: String,
    line: usize,
    /// The module the text is in (inline `mod name { … }` blocks included).
    module: Vec<String>,
    /// What `crate::` means here: the library root, or [`MAIN`] in the binary.
    root: Vec<String>,
    segments: Vec<String>,
    /// For a `use` leaf: the name it brings in (None for `_`), and whether it is a glob.
    import: Option<(Option<String>, bool)>,
}

impl Written {
    fn text(&self) -> String {
        let mut s = self.segments.join("::");
        if matches!(self.import, Some((_, true))) {
            s.push_str("::*");
        }
        s
    }
}

#[derive(Default)]
struct Scan {
    /// Every module, with where it is declared.
    modules: BTreeMap<Vec<String>, (String, usize)>,
    paths: Vec<Written>,
}

impl Scan {
    fn file(&mut self, file: &str, module: Vec<String>, root: Vec<String>, toks: &[Token]) {
        // A module with a file is shown at its file, not where a parent declares it.
        self.modules.insert(module.clone(), (file.to_owned(), 1));
        // (module, brace depth its block opened at)
        let mut stack: Vec<(Vec<String>, usize)> = vec![(module, 0)];
        let mut depth = 0usize;
        let mut opening: Option<Vec<String>> = None;
        let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => Some(s.as_str()),
            _ => None,
        };
        let is = |i: usize, t: &Tok| toks.get(i).map(|x| &x.tok) == Some(t);
        let mut i = 0;
        while i < toks.len() {
            let current = stack.last().map(|s| s.0.clone()).unwrap_or_default();
            match &toks[i].tok {
                Tok::Punct('{') => {
                    depth += 1;
                    if let Some(m) = opening.take() {
                        stack.push((m, depth));
                    }
                    i += 1;
                }
                Tok::Punct('}') => {
                    if stack.len() > 1 && stack.last().map(|s| s.1) == Some(depth) {
                        stack.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                Tok::Ident(k) if k == "mod" && ident(i + 1).is_some() => {
                    let mut m = current;
                    m.push(ident(i + 1).unwrap_or_default().to_owned());
                    self.modules
                        .entry(m.clone())
                        .or_insert_with(|| (file.to_owned(), toks[i].line));
                    if is(i + 2, &Tok::Punct('{')) {
                        opening = Some(m);
                    }
                    i += 2;
                }
                Tok::Ident(k) if k == "use" => {
                    let mut leaves = Vec::new();
                    i = use_tree(toks, i + 1, &[], &mut leaves);
                    for leaf in leaves {
                        self.paths.push(Written {
                            file: file.to_owned(),
                            line: leaf.line,
                            module: current.clone(),
                            root: root.clone(),
                            segments: leaf.segments,
                            import: Some((leaf.name, leaf.glob)),
                        });
                    }
                }
                Tok::Ident(first)
                    if !(i > 0 && matches!(toks[i - 1].tok, Tok::PathSep | Tok::Punct('.')))
                        && is(i + 1, &Tok::PathSep)
                        && ident(i + 2).is_some() =>
                {
                    let line = toks[i].line;
                    let mut segments = vec![first.clone()];
                    let mut j = i + 1;
                    while is(j, &Tok::PathSep) {
                        let Some(s) = ident(j + 1) else { break };
                        segments.push(s.to_owned());
                        j += 2;
                    }
                    self.paths.push(Written {
                        file: file.to_owned(),
                        line,
                        module: current,
                        root: root.clone(),
                        segments,
                        import: None,
                    });
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

struct Leaf {
    segments: Vec<String>,
    name: Option<String>,
    glob: bool,
    line: usize,
}

/// Parses one use tree from `i` (after `use`, or inside braces) under `prefix`; returns the
/// index after it. `{self, x}` leaves keep their `self`, resolved later to the prefix.
fn use_tree(toks: &[Token], mut i: usize, prefix: &[String], out: &mut Vec<Leaf>) -> usize {
    let mut segments = prefix.to_vec();
    let mut line = toks.get(i).map_or(0, |t| t.line);
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
        // `use ::name`: another crate.
        segments.push("::".to_owned());
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) if s != "as" => {
                segments.push(s.clone());
                line = toks[i].line;
                i += 1;
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('*')) => {
                out.push(Leaf {
                    segments,
                    name: None,
                    glob: true,
                    line: toks[i].line,
                });
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.tok) {
                        None => return i,
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        Some(_) => {
                            let next = use_tree(toks, i, &segments, out);
                            // Not a use tree after all (a macro's odd input): step over it.
                            i = if next == i { i + 1 } else { next };
                        }
                    }
                }
            }
            _ => break,
        }
    }
    if segments.len() == prefix.len() {
        return i;
    }
    let mut name = segments.last().cloned();
    if name.as_deref() == Some("self") {
        name = segments.iter().rev().nth(1).cloned();
    }
    if toks.get(i).map(|t| &t.tok) == Some(&Tok::Ident("as".to_owned())) {
        name = match toks.get(i + 1).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => Some(s.clone()),
            _ => None, // `as _`
        };
        i += 2;
    }
    out.push(Leaf {
        segments,
        name,
        glob: false,
        line,
    });
    i
}

// ---------------------------------------------------------------------------------------------
// Resolution and the rules.

fn entry_segments(e: &str) -> Vec<&str> {
    e.split("::").collect()
}

fn starts_with(path: &[String], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The unit (longest table entry prefixing `path`) and its layer.
fn unit_of(path: &[String]) -> Option<(String, Layer)> {
    LAYERS
        .iter()
        .filter(|(e, _)| starts_with(path, &entry_segments(e)))
        .max_by_key(|(e, _)| entry_segments(e).len())
        .map(|(e, l)| ((*e).to_owned(), *l))
}

/// For a parent module (a proper prefix of table entries): the lowest layer it contains.
fn parent_layer(path: &[String]) -> Option<Layer> {
    LAYERS
        .iter()
        .filter(|(e, _)| {
            let e = entry_segments(e);
            e.len() > path.len() && path.iter().zip(&e).all(|(a, b)| a == b)
        })
        .map(|(_, l)| *l)
        .min()
}

fn show(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Infrastructure => "infrastructure",
        Domain => "domain",
        Api => "api",
        Root => "root",
    }
}

/// How a written path reached our code.
enum Via {
    /// `crate::`, `super::`, `self::`, `localhostd::` or a child module's name.
    Direct,
    /// A name brought in by `use`, pointing at this module.
    Import(Vec<String>),
}

struct Resolver<'a> {
    modules: &'a BTreeMap<Vec<String>, (String, usize)>,
    /// module → name → what a `use` in it brought in (within our crate).
    names: HashMap<Vec<String>, HashMap<String, Vec<String>>>,
    /// module → modules it glob-imports.
    globs: HashMap<Vec<String>, Vec<Vec<String>>>,
}

impl Resolver<'_> {
    fn resolve(&self, w: &Written) -> Option<(Vec<String>, Via)> {
        let segs = &w.segments;
        let first = segs.first()?.as_str();
        let (mut base, mut k, via) = match first {
            "crate" => (w.root.clone(), 1, Via::Direct),
            "localhostd" => (Vec::new(), 1, Via::Direct),
            "self" | "super" => (w.module.clone(), 0, Via::Direct),
            "::" => return None,
            name => {
                let (target, imported) = self.lookup(&w.module, name, &mut Vec::new())?;
                let via = if imported {
                    Via::Import(target.clone())
                } else {
                    Via::Direct
                };
                (target, 1, via)
            }
        };
        // `self::` stays, each `super::` goes one module up (`self::super::x` is legal too).
        while let Some(s) = segs.get(k).filter(|s| *s == "self" || *s == "super") {
            if s == "super" {
                base.pop()?;
            }
            k += 1;
        }
        // A `{self, …}` leaf names its prefix.
        base.extend(segs[k..].iter().filter(|s| *s != "self").cloned());
        Some((base, via))
    }

    /// A relative name in `module`: a child module, a name a `use` brought in, or either of
    /// those in a glob-imported module (`use super::*` in `mod tests`).
    fn lookup(
        &self,
        module: &[String],
        name: &str,
        seen: &mut Vec<Vec<String>>,
    ) -> Option<(Vec<String>, bool)> {
        if seen.iter().any(|s| s == module) {
            return None;
        }
        seen.push(module.to_vec());
        let mut child = module.to_vec();
        child.push(name.to_owned());
        if self.modules.contains_key(&child) {
            return Some((child, false));
        }
        if let Some(t) = self.names.get(module).and_then(|n| n.get(name)) {
            return Some((t.clone(), true));
        }
        for g in self.globs.get(module).into_iter().flatten() {
            if let Some(found) = self.lookup(g, name, seen) {
                return Some(found);
            }
        }
        None
    }
}

struct Edge {
    from: String,
    to: String,
    at: String,
    path: String,
}

impl Scan {
    fn evaluate(self) -> Vec<Violation> {
        let mut out = BTreeSet::new();
        let mut resolver = Resolver {
            modules: &self.modules,
            names: HashMap::new(),
            globs: HashMap::new(),
        };
        // Names first (two rounds, so `use store::kv;` after `use crate::store;` resolves).
        for _ in 0..2 {
            for w in &self.paths {
                let Some((name, glob)) = &w.import else {
                    continue;
                };
                let Some((t, _)) = resolver.resolve(w) else {
                    continue;
                };
                if *glob {
                    let g = resolver.globs.entry(w.module.clone()).or_default();
                    if !g.contains(&t) {
                        g.push(t);
                    }
                } else if let Some(name) = name {
                    resolver
                        .names
                        .entry(w.module.clone())
                        .or_default()
                        .insert(name.clone(), t);
                }
            }
        }

        for (m, (file, line)) in &self.modules {
            if unit_of(m).is_none() && parent_layer(m).is_none() {
                out.insert(Violation {
                    at: format!("{file}:{line}"),
                    rule: "unknown",
                    path: show(m),
                    message: format!(
                        "module `{}` is not in the layer table: add it to the layer table",
                        show(m)
                    ),
                });
            }
        }

        let mut same_layer: Vec<(Layer, Edge)> = Vec::new();
        for w in &self.paths {
            let Some((target, via)) = resolver.resolve(w) else {
                continue;
            };
            if let Via::Import(t) = &via {
                // Counted at its `use`, unless that named a parent module.
                if unit_of(t).is_some() || parent_layer(t).is_none() {
                    continue;
                }
            }
            let (from, from_layer) = match unit_of(&w.module) {
                Some(u) => u,
                None => match parent_layer(&w.module) {
                    Some(l) => (show(&w.module), l),
                    None => continue, // reported above
                },
            };
            let at = format!("{}:{}", w.file, w.line);
            let text = w.text();
            let Some((to, to_layer)) = unit_of(&target) else {
                if parent_layer(&target).is_none() {
                    out.insert(Violation {
                        at,
                        rule: "unknown",
                        path: text.clone(),
                        message: format!(
                            "`{text}` names `{}`, which no entry of the layer table covers: add it to the layer table",
                            show(&target)
                        ),
                    });
                }
                continue;
            };
            if to == from {
                continue;
            }
            let (fl, tl) = (layer_name(from_layer), layer_name(to_layer));
            if to_layer == Api && from_layer < Api {
                out.insert(Violation {
                    at,
                    rule: "a",
                    path: text.clone(),
                    message: format!(
                        "`{text}`: {from} ({fl}) names api; nothing below api may know HTTP"
                    ),
                });
            } else if to_layer > from_layer {
                out.insert(Violation {
                    at,
                    rule: "b",
                    path: text.clone(),
                    message: format!(
                        "`{text}`: {from} ({fl}) names {to} ({tl}), a layer above its own"
                    ),
                });
            } else if to_layer == from_layer {
                same_layer.push((
                    from_layer,
                    Edge {
                        from,
                        to,
                        at,
                        path: text,
                    },
                ));
            }
        }
        out.extend(cycles(&same_layer));
        out.into_iter().collect()
    }
}

/// One violation per strongly connected set of units in a layer, showing its shortest cycle
/// through the first unit and where each of its arrows is written.
fn cycles(edges: &[(Layer, Edge)]) -> Vec<Violation> {
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Edge>> = BTreeMap::new();
    let mut layer_of: BTreeMap<&str, Layer> = BTreeMap::new();
    for (l, e) in edges {
        graph.entry(&e.from).or_default().entry(&e.to).or_insert(e);
        layer_of.insert(&e.from, *l);
    }
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(u) = todo.pop() {
            for v in graph.get(u).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(*v) {
                    todo.push(v);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|u| (*u, reach(u))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (u, r) in &reachable {
        if done.contains(u) || !r.contains(u) {
            continue;
        }
        let scc: BTreeSet<&str> = r
            .iter()
            .filter(|v| reachable.get(*v).is_some_and(|rv| rv.contains(u)))
            .copied()
            .collect();
        done.extend(scc.iter().copied());
        // Shortest way from u back to u inside the set.
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*u]);
        'bfs: while let Some(x) = queue.pop_front() {
            for v in graph.get(x).into_iter().flat_map(|m| m.keys()) {
                if !scc.contains(v) || prev.contains_key(v) {
                    continue;
                }
                prev.insert(v, x);
                if v == u {
                    break 'bfs;
                }
                queue.push_back(v);
            }
        }
        let mut cycle = vec![*u];
        let mut x = prev.get(u).copied().unwrap_or(u);
        while x != *u {
            cycle.push(x);
            x = prev.get(x).copied().unwrap_or(u);
        }
        cycle.push(u);
        let n = cycle.len();
        cycle[1..n - 1].reverse();
        let arrows: Vec<String> = cycle
            .windows(2)
            .filter_map(|w| graph.get(w[0]).and_then(|m| m.get(w[1])))
            .map(|e| format!("{} → {} at {} `{}`", e.from, e.to, e.at, e.path))
            .collect();
        let first_at = cycle
            .get(1)
            .and_then(|v| graph.get(u).and_then(|m| m.get(v)))
            .map_or_else(String::new, |e| e.at.clone());
        let path = cycle.join(" → ");
        let members = if scc.len() + 1 > cycle.len() {
            format!(
                " (the circle also holds: {})",
                scc.iter().copied().collect::<Vec<_>>().join(", ")
            )
        } else {
            String::new()
        };
        let layer = layer_of.get(u).map_or("?", |l| layer_name(*l));
        out.push(Violation {
            at: first_at,
            rule: "c",
            path: path.clone(),
            message: format!(
                "cycle in the {layer} layer: {path}; {}{members}",
                arrows.join("; ")
            ),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn listing(v: &[Violation]) -> String {
    v.iter().map(|v| format!("  {v}\n")).collect()
}

/// The CI check: the real tree points one way (issue 24).
#[test]
fn the_source_tree_depends_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = check(&src);
    assert!(
        v.is_empty(),
        "{} layer violation(s) in src/:\n{}",
        v.len(),
        listing(&v)
    );
}

/// A small tree that follows every rule; each test below plants one kind of violation in it.
/// It covers what must stay free: paths inside a unit, down the layers, a parent module named
/// by `use` and followed inline, `use super::*` in a test module, and the binary's
/// `localhostd::` paths.
const CLEAN: &[(&str, &str)] = &[
    (
        "lib.rs",
        "pub mod api;\npub mod config;\npub mod daemon;\npub mod logging;\npub mod ops;\npub mod store;\n",
    ),
    (
        "main.rs",
        "use localhostd::{api, daemon};\nfn main() {\n    localhostd::daemon::run();\n    api::serve();\n}\n",
    ),
    (
        "daemon.rs",
        "use crate::api::error;\npub const FILES_DIR: &str = \"files\";\npub fn run() {\n    crate::store::kv::Kv::new();\n}\n",
    ),
    (
        "api/mod.rs",
        "pub mod error;\npub mod files;\nuse crate::store::{kv::{Kv, Op}, db};\n",
    ),
    ("api/error.rs", "pub struct ApiError;\n"),
    (
        "api/files.rs",
        "use super::error::ApiError;\nfn f() -> crate::api::error::ApiError {\n    todo!()\n}\n",
    ),
    ("config/mod.rs", "pub struct LogConfig;\n"),
    ("logging.rs", "use crate::config::LogConfig;\n"),
    ("ops/mod.rs", "pub mod metrics;\n"),
    (
        "ops/metrics/mod.rs",
        "use crate::store::{self, db::Db};\nfn f() {\n    store::kv::Kv::new();\n}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    ),
    ("store/mod.rs", "pub mod db;\npub mod kv;\n"),
    (
        "store/db.rs",
        "use crate::config::LogConfig;\npub struct Db;\n",
    ),
    (
        "store/kv/mod.rs",
        "mod cache;\nuse super::db::Db;\npub struct Kv;\n",
    ),
    (
        "store/kv/cache.rs",
        "use super::Kv;\nuse super::super::db::Db;\n",
    ),
];

/// `CLEAN` in `<temp>/src`, with `changes` written over it (or added).
fn write_tree(changes: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let kept = CLEAN
        .iter()
        .filter(|(p, _)| !changes.iter().any(|(c, _)| c == p));
    for (path, text) in kept.chain(changes) {
        let p = dir.path().join("src").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Checks `CLEAN` with `changes` planted.
fn planted(changes: &[(&str, &str)]) -> Vec<Violation> {
    let dir = write_tree(changes);
    check(&dir.path().join("src"))
}

/// Exactly these (rule, at, path) were reported, in any order.
fn assert_reported(v: &[Violation], expected: &[(&str, &str, &str)]) {
    let mut got: Vec<(&str, &str, &str)> = v
        .iter()
        .map(|v| (v.rule, v.at.as_str(), v.path.as_str()))
        .collect();
    let mut want = expected.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "reported:\n{}", listing(v));
}

#[test]
fn the_clean_tree_reports_nothing() {
    assert_reported(&planted(&[]), &[]);
}

#[test]
fn a_use_tree_naming_api_below_api_is_reported() {
    let kv = "mod cache;\nuse super::db::Db;\nuse crate::{\n    api::{error::ApiError, files as f},\n    config,\n};\npub struct Kv;\n";
    assert_reported(
        &planted(&[("store/kv/mod.rs", kv)]),
        &[
            ("a", "src/store/kv/mod.rs:4", "crate::api::error::ApiError"),
            ("a", "src/store/kv/mod.rs:4", "crate::api::files"),
        ],
    );
}

#[test]
fn an_inline_api_path_in_code_or_a_macro_body_is_reported() {
    let metrics = "use crate::store::{self, db::Db};\nfn g() {\n    let _ = crate::api::x::y();\n}\nmacro_rules! m {\n    () => {\n        $crate::api::z()\n    };\n}\n";
    assert_reported(
        &planted(&[("ops/metrics/mod.rs", metrics)]),
        &[
            ("a", "src/ops/metrics/mod.rs:3", "crate::api::x::y"),
            ("a", "src/ops/metrics/mod.rs:7", "crate::api::z"),
        ],
    );
}

#[test]
fn a_super_chain_into_api_is_reported() {
    let cache =
        "use super::Kv;\nfn f() -> super::super::super::api::error::ApiError {\n    todo!()\n}\n";
    assert_reported(
        &planted(&[("store/kv/cache.rs", cache)]),
        &[(
            "a",
            "src/store/kv/cache.rs:2",
            "super::super::super::api::error::ApiError",
        )],
    );
}

#[test]
fn infrastructure_naming_the_domain_is_reported() {
    let db = "use crate::config::LogConfig;\nuse crate::store::kv::Kv;\npub struct Db;\n";
    assert_reported(
        &planted(&[("store/db.rs", db)]),
        &[("b", "src/store/db.rs:2", "crate::store::kv::Kv")],
    );
}

#[test]
fn the_domain_naming_the_composition_root_is_reported() {
    let kv = "mod cache;\nuse super::db::Db;\npub struct Kv;\nfn dir() -> &'static str {\n    crate::daemon::FILES_DIR\n}\n";
    let v = planted(&[("store/kv/mod.rs", kv)]);
    assert_reported(
        &v,
        &[("b", "src/store/kv/mod.rs:5", "crate::daemon::FILES_DIR")],
    );
    assert!(
        v[0].message
            .contains("store::kv (domain) names daemon (root)"),
        "{}",
        v[0]
    );
}

#[test]
fn a_cycle_inside_a_layer_is_reported_with_both_arrows() {
    let config = "pub struct LogConfig;\npub fn validate() {\n    crate::logging::parse_filter(\"info\");\n}\n";
    let v = planted(&[("config/mod.rs", config)]);
    assert_reported(
        &v,
        &[("c", "src/config/mod.rs:3", "config → logging → config")],
    );
    for arrow in [
        "config → logging at src/config/mod.rs:3 `crate::logging::parse_filter`",
        "logging → config at src/logging.rs:1 `crate::config::LogConfig`",
    ] {
        assert!(v[0].message.contains(arrow), "{arrow:?} missing: {}", v[0]);
    }
}

#[test]
fn a_module_missing_from_the_layer_table_is_reported() {
    let files =
        "use super::error::ApiError;\nfn f() -> crate::ops::weather::Report {\n    todo!()\n}\n";
    assert_reported(
        &planted(&[
            ("jobs/mod.rs", "pub mod scheduler;\n"),
            ("jobs/scheduler.rs", "pub struct Scheduler;\n"),
            ("api/files.rs", files),
        ]),
        &[
            ("unknown", "src/jobs/scheduler.rs:1", "jobs::scheduler"),
            (
                "unknown",
                "src/api/files.rs:2",
                "crate::ops::weather::Report",
            ),
        ],
    );
}

#[test]
fn paths_in_comments_and_literals_are_not_imports() {
    // The last line is the positive control: code after every kind of literal is still read.
    let db = r####"//! Mentions crate::api::x in a module doc.
/// And crate::api::x in an item doc.
pub struct Db; // crate::api::x
/* crate::api::x /* nested: crate::api::x */ still a comment: crate::api::x */
const A: &str = "crate::api::x \" crate::api::x";
const B: &str = r#"crate::api::x "quoted" crate::api::x"#;
const C: &[u8] = b"crate::api::x"; const C2: &[u8] = br##"crate::api::x"##;
const D: char = '"'; const E: char = '\''; const F: u8 = b'"'; const G: char = '\u{22}';
fn g<'a>(s: &'a str) -> &'a str { 'outer: loop { break 'outer s; } }
const U: &str = "http://example/crate::api::x";
fn real() { crate::api::real(); }
"####;
    assert_reported(
        &planted(&[("store/db.rs", db)]),
        &[("a", "src/store/db.rs:11", "crate::api::real")],
    );
}

#[test]
fn super_resolves_against_inline_modules_and_mod_rs() {
    let db = "pub struct Db;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::kv::Kv;\n    mod deeper {\n        fn f() { super::super::super::super::api::x(); }\n    }\n}\nfn after() -> super::kv::Kv { todo!() }\n";
    // In store/kv/mod.rs (module store::kv) two supers reach the crate root.
    let kv = "mod cache;\nuse super::db::Db;\nuse super::super::api::x;\npub struct Kv;\n";
    assert_reported(
        &planted(&[("store/db.rs", db), ("store/kv/mod.rs", kv)]),
        &[
            ("b", "src/store/db.rs:5", "super::super::kv::Kv"),
            (
                "a",
                "src/store/db.rs:7",
                "super::super::super::super::api::x",
            ),
            ("b", "src/store/db.rs:10", "super::kv::Kv"),
            ("a", "src/store/kv/mod.rs:3", "super::super::api::x"),
        ],
    );
}

#[test]
fn a_parent_module_followed_inline_is_read_where_it_is_used() {
    // `use crate::store;` names no unit; `store::kv::Kv` in code does.
    let db = "use crate::store;\npub struct Db;\nfn f() {\n    store::kv::Kv::new();\n}\n";
    assert_reported(
        &planted(&[("store/db.rs", db)]),
        &[("b", "src/store/db.rs:4", "store::kv::Kv::new")],
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn a_violation_planted_in_a_copy_of_the_real_tree_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &src);
    let db = src.join("store/db.rs");
    let mut text = std::fs::read_to_string(&db).unwrap();
    let line = text.lines().count() + 2;
    text.push_str("\npub fn planted() -> crate::store::kv::Kv {\n    todo!()\n}\n");
    std::fs::write(&db, text).unwrap();
    assert_reported(
        &check(&src),
        &[(
            "b",
            &format!("src/store/db.rs:{line}"),
            "crate::store::kv::Kv",
        )],
    );
}
