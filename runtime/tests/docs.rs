//! The docs say only what the runtime accepts: every ```toml block in the
//! README, the book (`docs/src`) and the examples' READMEs goes through the
//! runtime's own config parser — a whole service file through all of it,
//! a block marked ```toml fragment through its first stage (syntax, key
//! names, types, value formats) — and every `natsapp-wasm VERB --flag`
//! written in code there is an option the binary has.

use natsapp_wasm::config::Config;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ is in the repository")
        .to_path_buf()
}

/// The documentation files, relative to the repository.
fn doc_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![PathBuf::from("README.md")];
    let mut folders = vec![root.join("docs/src"), root.join("examples")];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path.strip_prefix(&root).expect("in the repository").into());
            }
        }
    }
    files.sort();
    assert!(files.len() > 20, "the book is missing: {files:?}");
    files
}

/// A fenced block: its info string, first line number and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: i + 2,
                    text: String::new(),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().expect("open")),
            (Some(b), None) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    out
}

/// What `${VAR}` reads in the docs' examples: any variable has a value,
/// except those the runtime reads to override the file.
fn example_env(name: &str) -> Option<String> {
    (!natsapp_wasm::ENVIRONMENT_VARIABLES.contains(&name)).then(|| "example".to_string())
}

#[test]
fn every_toml_block_parses_with_the_runtime() {
    let root = repo();
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(root.join(&file)).expect("read a doc");
        for b in blocks(&text)
            .into_iter()
            .filter(|b| b.info.starts_with("toml"))
        {
            // A whole file is read from a folder holding the components it
            // names (empty files: validation checks that they are there).
            let dir = tempfile::tempdir().expect("a temporary folder");
            for wasm in b.text.split('"').filter(|s| s.ends_with(".wasm")) {
                let component = dir.path().join(wasm);
                std::fs::create_dir_all(component.parent().expect("in the folder")).unwrap();
                std::fs::write(component, b"").unwrap();
            }
            let path = dir.path().join("service.toml");
            let parsed = match b.info.as_str() {
                "toml" => Config::parse(&path, &b.text, example_env).map(|_| ()),
                "toml fragment" => Config::check_part(&path, &b.text),
                other => panic!(
                    "{}:{}: unknown block kind {other:?}",
                    file.display(),
                    b.line
                ),
            };
            if let Err(e) = parsed {
                failures.push(format!("{}:{} ({}): {e}", file.display(), b.line, b.info));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 6, "only {checked} toml blocks found");
}

#[test]
fn an_unknown_key_in_a_block_fails() {
    let path = repo().join("docs/src/service.toml");
    let e = Config::check_part(&path, "[[subscribers]]\nname = \"x\"\nmax_delivr = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `max_delivr`"), "{e}");
}

/// Code in a markdown text: fenced blocks and inline spans.
fn code_spans(text: &str) -> Vec<String> {
    let mut out: Vec<String> = blocks(text).into_iter().map(|b| b.text).collect();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let parts: Vec<&str> = line.split('`').collect();
        out.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
    }
    out
}

/// Each `natsapp-wasm VERB …` command in `code`: the verb (empty for the
/// binary's own options) and the options written after it.
fn commands(code: &str) -> Vec<(String, Vec<String>)> {
    let joined = code.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        // A shell comment is not a command.
        let line = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "natsapp-wasm" {
                continue;
            }
            // `cargo … -p natsapp-wasm` names the package, unless `--`
            // passes the rest on to the binary.
            let mut rest = &words[i + 1..];
            let package = i > 0 && words[i - 1].starts_with('-');
            if rest.first() == Some(&"--") {
                rest = &rest[1..];
            } else if package {
                continue;
            }
            let verb = match rest.first() {
                Some(v) if v.chars().all(|c| c.is_ascii_lowercase()) => {
                    rest = &rest[1..];
                    v.to_string()
                }
                Some(v) if v.starts_with('-') => String::new(),
                _ => continue,
            };
            let flags = rest
                .iter()
                .take_while(|w| !matches!(**w, "#" | "&&" | "|" | ";" | "&"))
                .filter(|w| w.starts_with('-') && w.len() > 1 && **w != "--")
                .map(|w| w.split('=').next().unwrap_or(w).to_string())
                .filter(|f| {
                    f.chars()
                        .nth(1)
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
                })
                .collect();
            out.push((verb, flags));
        }
    }
    out
}

fn help(verb: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natsapp-wasm"));
    // `help` is clap's own verb; the binary's own options are its options.
    if !verb.is_empty() && verb != "help" {
        cmd.arg(verb);
    }
    let out = cmd.arg("--help").output().expect("run natsapp-wasm --help");
    assert!(
        out.status.success(),
        "natsapp-wasm {verb} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

#[test]
fn every_command_line_in_the_docs_uses_options_the_cli_has() {
    let root = repo();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let verbs = help("");
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(root.join(&file)).expect("read a doc");
        for code in code_spans(&text) {
            for (verb, flags) in commands(&code) {
                let listed = verb.is_empty()
                    || verbs
                        .lines()
                        .any(|l| l.split_whitespace().next() == Some(verb.as_str()));
                if !listed {
                    failures.push(format!(
                        "{}: `natsapp-wasm {verb}` is not a command",
                        file.display()
                    ));
                    continue;
                }
                let help = helps.entry(verb.clone()).or_insert_with(|| help(&verb));
                for flag in flags {
                    let known = help
                        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | '=' | '<'))
                        .any(|w| w == flag);
                    if !known {
                        failures.push(format!(
                            "{}: `natsapp-wasm {verb}` has no option {flag}",
                            file.display()
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 15, "only {checked} options found in the docs");
}

#[test]
fn the_command_reader_finds_verbs_and_options() {
    assert_eq!(
        commands("natsapp-wasm invoke service.toml -s x --file a.json \\\n  --kv B k v --json # done --nope"),
        [("invoke".to_string(), vec!["-s", "--file", "--kv", "--json"].into_iter().map(String::from).collect::<Vec<_>>())]
    );
    assert_eq!(
        commands("cargo run -p natsapp-wasm -- run x.toml\ncargo bench -p natsapp-wasm --bench throughput"),
        [("run".to_string(), Vec::<String>::new())]
    );
    assert_eq!(
        commands("natsapp-wasm --version"),
        [(String::new(), vec!["--version".to_string()])]
    );
}

#[test]
fn every_link_between_docs_resolves() {
    let root = repo();
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(root.join(&file)).expect("read a doc");
        for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.contains(' ') {
                continue;
            }
            let resolved = root.join(&file).with_file_name(target);
            if !resolved.exists() {
                failures.push(format!("{}: {target} does not exist", file.display()));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 50, "only {checked} links found");
}
