//! The runtime's modules import downwards only: every top-level module of
//! the library has a layer (`LAYERS`), and imports only from layers below
//! its own; there is no import cycle among its files; and nothing refers to
//! an item of `lib.rs` (the crate root only declares modules and re-exports
//! them for users). Read from the `crate::` and `super::` paths in the
//! library's sources — comments, literals and test modules left out — (the
//! binary, `main.rs` and `cli/`, is a crate of its own on top).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first: a module imports only from lower layers.
/// Modules on one line are peers and import none of each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["config", "scaffold"],
    &["oci"],
    &["nats", "grants"],
    &["outputs", "fatal"],
    &["message"],
    &["counters"],
    &["settle"],
    &["wasm"],
    &["dispatch", "endpoint", "plan", "testing"],
    &["scheduler", "asyncapi"],
    &["roster", "deploy", "redrive"],
    &["observability"],
    &["service"],
];

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| {
            panic!("module {top} has no layer: add it to LAYERS in runtime/tests/layers.rs, above what it imports and below what imports it")
        })
}

/// A module: its path (`nats::wire`, `""` for the root) and its file.
struct Module {
    name: String,
    file: PathBuf,
}

fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).expect("read runtime/src") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                if path != src.join("cli") {
                    folders.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path == src.join("main.rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.push(Module {
                name: parts.join("::"),
                file: path,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The source with comments, string and character literals blanked (the
/// same length, newlines kept), so braces and paths in them do not count.
fn blank(text: &str) -> Vec<char> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let blank_range = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            blank_range(&mut out, i, end);
            i = end;
        } else if rest.starts_with(&['/', '*']) {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j..].starts_with(&['*', '/']))
                .map_or(chars.len(), |j| j + 2);
            blank_range(&mut out, i, end);
            i = end;
        } else if chars[i] == 'r'
            && matches!(rest.get(1), Some('#' | '"'))
            && !ident_before(&chars, i)
        {
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let mut closing = vec!['"'];
            closing.extend(std::iter::repeat_n('#', hashes));
            let end = (i + 2 + hashes..chars.len())
                .find(|&j| chars[j..].starts_with(&closing))
                .map_or(chars.len(), |j| j + closing.len());
            blank_range(&mut out, i, end);
            i = end;
        } else if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank_range(&mut out, i, j + 1);
            i = j + 1;
        } else if chars[i] == '\'' {
            // A character literal ('x', '\n', '\''), not a lifetime ('a).
            let end = if rest.get(1) == Some(&'\\') {
                (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map(|j| j + 1)
            } else if rest.get(2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank_range(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The `{` of a `mod NAME {` starting at `i`, with the name; `None` for a
/// `mod NAME;` or anything else.
fn inline_module(code: &[char], i: usize) -> Option<(String, usize)> {
    if !code[i..].starts_with(&['m', 'o', 'd', ' ']) || ident_before(code, i) {
        return None;
    }
    let start = i + 4;
    let end = (start..code.len()).find(|&j| !(code[j].is_alphanumeric() || code[j] == '_'))?;
    let brace = (end..code.len()).find(|&j| !code[j].is_whitespace())?;
    (code[brace] == '{' && end > start).then(|| (code[start..end].iter().collect(), brace))
}

/// Where `#[cfg(test)]` puts a module, from the attribute to the module's
/// closing brace.
fn test_module(code: &[char], i: usize) -> Option<usize> {
    let attribute: Vec<char> = "#[cfg(test)]".chars().collect();
    if !code[i..].starts_with(&attribute) {
        return None;
    }
    let next = (i + attribute.len()..code.len()).find(|&j| !code[j].is_whitespace())?;
    let (_, brace) = inline_module(code, next)?;
    let mut depth = 0;
    for (j, c) in code.iter().enumerate().skip(brace) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    Some(code.len())
}

/// Every `crate::` or `super::` path in `text`, expanded from `use` groups
/// (`crate::{a, b::{c, d}}` gives `crate::a`, `crate::b::c`, `crate::b::d`),
/// with the inline modules (`mod x { … }`) it is written in.
fn paths(text: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let chars = blank(text);
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        if let Some(end) = test_module(&chars, i) {
            i = end;
            continue;
        }
        if let Some((name, brace)) = inline_module(&chars, i) {
            inline.push((name, depth));
            depth += 1;
            i = brace + 1;
            continue;
        }
        match chars[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let rest = &chars[i..];
        let head = if rest.starts_with(&['c', 'r', 'a', 't', 'e', ':', ':']) {
            "crate"
        } else if rest.starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
            "super"
        } else {
            i += 1;
            continue;
        };
        if ident_before(&chars, i) {
            i += 1;
            continue;
        }
        let (found, end) = tree(&chars, i + head.len() + 2, vec![head.to_string()]);
        let within: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
        out.extend(found.into_iter().map(|p| (p, within.clone())));
        i = end;
    }
    out
}

/// The paths of the use tree at `chars[i..]`, under `prefix`; and where it ends.
fn tree(chars: &[char], mut i: usize, mut prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i < chars.len() && chars[i] == '{' {
            let mut found = Vec::new();
            i += 1;
            loop {
                while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                    i += 1;
                }
                if i >= chars.len() || chars[i] == '}' {
                    return (found, i + 1);
                }
                let (inner, end) = tree(chars, i, prefix.clone());
                found.extend(inner);
                i = end;
                // Skip an alias (`x as y`) up to the next item.
                while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(chars[start..i].iter().collect());
        if chars[i..].starts_with(&[':', ':']) {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The module `path` (written in `module`) refers to: the longest prefix
/// that is a module; `None` for an item of the crate root.
fn resolve(module: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<String> = Vec::new();
    let mut rest = path;
    if path[0] == "super" {
        segments = module.split("::").map(str::to_string).collect();
        while rest.first().is_some_and(|s| s == "super") {
            segments.pop();
            rest = &rest[1..];
        }
    } else {
        rest = &rest[1..];
    }
    segments.extend(rest.iter().cloned());
    segments.retain(|s| !s.is_empty() && s != "self");
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains(m))
}

fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

/// The import graph of `runtime/src`: module → module → an import that
/// makes the edge.
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, String>>,
    root_items: Vec<String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let known: BTreeSet<String> = modules.iter().map(|m| m.name.clone()).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut root_items = Vec::new();
    for m in &modules {
        let text = std::fs::read_to_string(&m.file).expect("read a module");
        for (path, inline) in paths(&text) {
            let what = path.join("::");
            let written_in = std::iter::once(m.name.clone())
                .chain(inline)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("::");
            match resolve(&written_in, &path, &known) {
                None if m.name.is_empty() => {}
                None => root_items.push(format!("{} uses {what}", m.file.display())),
                Some(to) if to == m.name || related(&m.name, &to) => {}
                Some(to) => {
                    edges
                        .entry(m.name.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(what);
                }
            }
        }
    }
    Graph { edges, root_items }
}

/// The strongly connected groups of more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let next: Vec<&'a str> = s
            .edges
            .get(v)
            .map(|t| t.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for w in next {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            loop {
                let w = s.stack.pop().expect("v is on the stack");
                s.on_stack.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(a, to)| std::iter::once(a.as_str()).chain(to.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The cycles of `edges`, each with the imports that close it.
fn report(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let plain = edges
        .iter()
        .map(|(a, to)| (a.clone(), to.keys().cloned().collect()))
        .collect();
    cycles(&plain)
        .into_iter()
        .map(|group| {
            let inside: Vec<String> = group
                .iter()
                .flat_map(|a| {
                    edges[a]
                        .iter()
                        .filter(|(b, _)| group.contains(b))
                        .map(move |(b, how)| format!("  {a} -> {b} ({how})"))
                })
                .collect();
            format!("cycle among {}:\n{}", group.join(", "), inside.join("\n"))
        })
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let found = report(&graph().edges);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_module_imports_only_from_layers_below_its_own() {
    let mut upward = Vec::new();
    for (a, to) in graph().edges {
        for (b, how) in to {
            let (from, into) = (top(&a), top(&b));
            if from != into && layer(into) >= layer(from) {
                upward.push(format!(
                    "{a} uses {how}: {into} is not below {from} (see LAYERS)"
                ));
            }
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
}

#[test]
fn nothing_uses_an_item_of_the_crate_root() {
    let found = graph().root_items;
    assert!(
        found.is_empty(),
        "lib.rs only declares and re-exports modules; import from the module instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_use_groups_inline_modules_and_relative_paths() {
    let text = r#"use crate::{a, b::{c, d as e}};
use super::super::f::G;
let x = crate::h::i(); // crate::not::this
let s = "crate::not::that { ";
let c = '{';
my_crate::j;
mod inner {
    use super::k::L;
}
use crate::m;
#[cfg(test)]
mod tests { use crate::n; }
use crate::o;
"#;
    let found: Vec<String> = paths(text)
        .into_iter()
        .map(|(p, inline)| format!("{}{}", inline.join("::"), p.join("::")))
        .collect();
    assert_eq!(
        found,
        [
            "crate::a",
            "crate::b::c",
            "crate::b::d",
            "super::super::f::G",
            "crate::h::i",
            "innersuper::k::L",
            "crate::m",
            "crate::o",
        ]
    );
    let known: BTreeSet<String> = ["x", "x::y", "x::f", "f"].map(String::from).into();
    let path = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        resolve("x::y::z", &path("super::super::f::G"), &known),
        Some("x::f".into())
    );
    assert_eq!(
        resolve("f::inner", &path("super::G"), &known),
        Some("f".into())
    );
    assert_eq!(resolve("f", &path("super::G"), &known), None, "the root");
    assert_eq!(
        resolve("f", &path("crate::x::y::T"), &known),
        Some("x::y".into())
    );
    assert_eq!(resolve("f", &path("crate::Error"), &known), None);
    let cyclic = report(&BTreeMap::from([
        (
            "a".into(),
            BTreeMap::from([("b".into(), "a uses b::X".into())]),
        ),
        (
            "b".into(),
            BTreeMap::from([("a".into(), "b uses a::Y".into())]),
        ),
    ]));
    assert_eq!(cyclic.len(), 1, "{cyclic:?}");
    assert!(layer("settle") < layer("wasm") && layer("observability") > layer("roster"));
}
