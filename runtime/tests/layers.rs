//! The runtime's modules import downwards only: no import cycle among the
//! files of `runtime/src`, none among its top-level modules (the layers),
//! and nothing refers to an item of `lib.rs` (the crate root only declares
//! modules and re-exports them for users). Read from the `crate::` and
//! `super::` paths in the library's sources, test modules left out (the
//! binary, `main.rs` and `cli/`, is a crate of its own on top).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The source without its test module and line comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate::` or `super::` in `code`, expanded
/// from `use` groups: `crate::{a, b::{c, d}}` gives `crate::a`,
/// `crate::b::c`, `crate::b::d`.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let head = if rest.starts_with("crate::") {
            "crate"
        } else if rest.starts_with("super::") {
            "super"
        } else {
            i += 1;
            continue;
        };
        if !starts_word {
            i += 1;
            continue;
        }
        let (found, end) = tree(&chars, i + head.len() + 2, vec![head.to_string()]);
        out.extend(found);
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
/// that is a module; `None` for an item of the crate root. A `super::` path
/// that leaves the crate is read as written in an inline module of the
/// file (`mod defaults { use super::… }`).
fn resolve(module: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
    let found = resolve_in(module, path, known);
    if found.is_none() && path[0] == "super" {
        return resolve_in(&format!("{module}::inline"), path, known);
    }
    found
}

fn resolve_in(module: &str, path: &[String], known: &BTreeSet<String>) -> Option<String> {
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

/// The import graph of `runtime/src`: module → module → where it is imported.
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
        for path in paths(&code(&text)) {
            let what = path.join("::");
            match resolve(&m.name, &path, &known) {
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

/// The cycles of `edges` (module → module → an import that makes the edge),
/// each with the imports that close it, as a readable report.
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
fn the_layers_import_downwards_only() {
    let mut layers: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, to) in graph().edges {
        let top = |m: &str| m.split("::").next().unwrap_or_default().to_string();
        for (b, how) in to {
            if top(&a) != top(&b) {
                layers
                    .entry(top(&a))
                    .or_default()
                    .entry(top(&b))
                    .or_insert(format!("{a} uses {how}"));
            }
        }
    }
    let found = report(&layers);
    assert!(found.is_empty(), "{}", found.join("\n"));
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
fn the_reader_sees_use_groups_and_relative_paths() {
    let found: Vec<String> = paths(&code(
        "use crate::{a, b::{c, d as e}};\nuse super::super::f::G;\nlet x = crate::h::i(); // crate::not::this\nmy_crate::j;\n#[cfg(test)]\nmod tests { use crate::k; }",
    ))
    .into_iter()
    .map(|p| p.join("::"))
    .collect();
    assert_eq!(
        found,
        [
            "crate::a",
            "crate::b::c",
            "crate::b::d",
            "super::super::f::G",
            "crate::h::i"
        ]
    );
    let known: BTreeSet<String> = ["x", "x::y", "x::f", "f"].map(String::from).into();
    let path = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        resolve("x::y::z", &path("super::super::f::G"), &known),
        Some("x::f".into())
    );
    assert_eq!(
        resolve("f", &path("super::f::G"), &known),
        Some("f".into()),
        "in an inline module of f"
    );
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
}
