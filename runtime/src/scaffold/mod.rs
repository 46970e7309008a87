//! `natsapp-wasm new NAME --lang rust|python|js|c`: writes a handler project
//! that builds on its own — the handler, the SDK and the WIT package
//! vendored beside it, its build command, a service.toml that
//! `natsapp-wasm check` accepts and a short README.

use std::fmt;
use std::path::{Path, PathBuf};

/// A handler language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with the natsapp-guest crate.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
    /// C with wit-bindgen, clang and wasm-tools.
    C,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            "c" => Ok(Lang::C),
            other => Err(format!(
                "unknown language {other:?}: use rust, python, js or c"
            )),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        })
    }
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a project, subject and crate name.
    #[error("invalid name {0:?}: use lowercase letters, digits and '-', starting with a letter")]
    BadName(String),
    /// The folder is there already.
    #[error("{} already exists; choose another name or remove it", .0.display())]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The WIT package, vendored into every project.
const WIT: &[(&str, &str)] = &[
    ("wit/world.wit", include_str!("../../../wit/world.wit")),
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/handler.wit", include_str!("../../../wit/handler.wit")),
    (
        "wit/publisher.wit",
        include_str!("../../../wit/publisher.wit"),
    ),
    (
        "wit/keyvalue.wit",
        include_str!("../../../wit/keyvalue.wit"),
    ),
    (
        "wit/deps/config/store.wit",
        include_str!("../../../wit/deps/config/store.wit"),
    ),
    (
        "wit/deps/config/world.wit",
        include_str!("../../../wit/deps/config/world.wit"),
    ),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../../wit/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/http/http.wit",
        include_str!("../../../wit/deps/http/http.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../wit/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../../wit/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../../wit/deps/sockets/sockets.wit"),
    ),
];

/// Where a C project keeps wasmtime's WASI preview1 reactor adapter.
pub const C_ADAPTER: &str = "wasi_snapshot_preview1.reactor.wasm";

/// The text files of a `lang` project named `name`, by relative path.
pub fn files(name: &str, lang: Lang) -> Vec<(String, String)> {
    let module = name.replace('-', "_");
    let stream = module.to_uppercase();
    let fill = |text: &str| {
        text.replace("{name}", name)
            .replace("{module}", &module)
            .replace("{stream}", &stream)
    };
    let mut out: Vec<(String, String)> = Vec::new();
    // (path in the project, text, whether it is a template to fill in)
    let (component, build, sources): (String, &str, &[(&str, &str, bool)]) = match lang {
        Lang::Rust => (
            format!("target/wasm32-wasip2/release/{module}.wasm"),
            "cargo build --target wasm32-wasip2 --release",
            &[
                ("Cargo.toml", include_str!("rust/Cargo.toml.in"), true),
                ("src/lib.rs", include_str!("rust/lib.rs.in"), true),
                (
                    "natsapp-guest/Cargo.toml",
                    include_str!("../../../guest-sdk/rust/Cargo.toml"),
                    false,
                ),
                (".gitignore", "/target\n", false),
            ],
        ),
        Lang::Python => (
            format!("{module}.wasm"),
            "./build.sh",
            &[
                ("app.py", include_str!("python/app.py.in"), true),
                ("test_app.py", include_str!("python/test_app.py.in"), true),
                ("build.sh", include_str!("python/build.sh.in"), true),
                (
                    "natsapp/__init__.py",
                    include_str!("../../../guest-sdk/python/natsapp/__init__.py"),
                    false,
                ),
                (
                    "natsapp_main.py",
                    include_str!("../../../guest-sdk/python/natsapp_main.py"),
                    false,
                ),
                (
                    "natsapp_vendor.py",
                    include_str!("../../../guest-sdk/python/natsapp_vendor.py"),
                    false,
                ),
                (".gitignore", "*.wasm\n__pycache__/\ndeps/\n", false),
            ],
        ),
        Lang::C => (
            format!("{module}.wasm"),
            "./build.sh",
            &[
                ("handler.c", include_str!("c/handler.c.in"), true),
                ("build.sh", include_str!("c/build.sh.in"), true),
                (
                    "natsapp.h",
                    include_str!("../../../guest-sdk/c/natsapp.h"),
                    false,
                ),
                (
                    "natsapp.c",
                    include_str!("../../../guest-sdk/c/natsapp.c"),
                    false,
                ),
                (
                    "natsapp_http.h",
                    include_str!("../../../guest-sdk/c/natsapp_http.h"),
                    false,
                ),
                (
                    "natsapp_http.c",
                    include_str!("../../../guest-sdk/c/natsapp_http.c"),
                    false,
                ),
                (
                    ".gitignore",
                    "*.wasm\n!wasi_snapshot_preview1.reactor.wasm\n.build/\n",
                    false,
                ),
            ],
        ),
        Lang::Js => (
            format!("{module}.wasm"),
            "./build.sh",
            &[
                ("handler.js", include_str!("js/handler.js.in"), true),
                (
                    "handler.test.mjs",
                    include_str!("js/handler.test.mjs.in"),
                    true,
                ),
                ("build.sh", include_str!("js/build.sh.in"), true),
                (
                    "natsapp.js",
                    include_str!("../../../guest-sdk/js/natsapp.js"),
                    false,
                ),
                (
                    "main.js",
                    include_str!("../../../guest-sdk/js/main.js"),
                    false,
                ),
                (
                    "preopens.mjs",
                    include_str!("../../../guest-sdk/js/preopens.mjs"),
                    false,
                ),
                (
                    "bundle.mjs",
                    include_str!("../../../guest-sdk/js/bundle.mjs"),
                    false,
                ),
                (
                    "package.json",
                    include_str!("../../../guest-sdk/js/package.json"),
                    false,
                ),
                (
                    "package-lock.json",
                    include_str!("../../../guest-sdk/js/package-lock.json"),
                    false,
                ),
                (".gitignore", "*.wasm\nnode_modules/\n.build/\n", false),
            ],
        ),
    };
    for (path, text, template) in sources {
        out.push((
            path.to_string(),
            if *template {
                fill(text)
            } else {
                text.to_string()
            },
        ));
    }
    if lang == Lang::Rust {
        out.push((
            "natsapp-guest/src/lib.rs".into(),
            include_str!("../../../guest-sdk/rust/src/lib.rs").to_string(),
        ));
        out.push((
            "natsapp-guest/src/kv.rs".into(),
            include_str!("../../../guest-sdk/rust/src/kv.rs").to_string(),
        ));
        out.push((
            "natsapp-guest/src/http.rs".into(),
            include_str!("../../../guest-sdk/rust/src/http.rs").to_string(),
        ));
    }
    let wit_root = if lang == Lang::Rust {
        "natsapp-guest/"
    } else {
        ""
    };
    for (path, text) in WIT {
        out.push((format!("{wit_root}{path}"), text.to_string()));
    }
    out.push((
        "service.toml".into(),
        fill(include_str!("service.toml.in")).replace("{component}", &component),
    ));
    out.push((
        "README.md".into(),
        format!(
            "# {name}\n\nA natsapp-wasm handler in {lang}: `{}` holds `handle(data, msg)`.\nBuild: `{build}` · check: `natsapp-wasm check service.toml` · run: `natsapp-wasm run service.toml` (NATS_SERVERS picks the server).\nTry one message without a server: `natsapp-wasm invoke service.toml '{{\"hello\": \"world\"}}'`{}\n",
            match lang {
                Lang::Rust => "src/lib.rs",
                Lang::Python => "app.py",
                Lang::Js => "handler.js",
                Lang::C => "handler.c",
            },
            match lang {
                Lang::Rust => "",
                Lang::Python => " · test: `python -m pytest` (test_app.py)",
                Lang::Js => " · test: `node --test` (handler.test.mjs)",
                Lang::C => "",
            }
        ),
    ));
    out
}

/// Writes a new `lang` project named `name` into `parent/name`; returns its folder.
pub fn create(parent: &Path, name: &str, lang: Lang) -> Result<PathBuf, ScaffoldError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = parent.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let mut all: Vec<(String, Vec<u8>)> = files(name, lang)
        .into_iter()
        .map(|(rel, text)| (rel, text.into_bytes()))
        .collect();
    if lang == Lang::C {
        // The adapter that makes a WASI preview1 module a component, from
        // the wasmtime release this runtime runs on.
        all.push((
            C_ADAPTER.into(),
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
                .to_vec(),
        ));
    }
    for (rel, bytes) in all {
        let path = root.join(&rel);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a file in the project"))?;
            std::fs::write(&path, &bytes)?;
            #[cfg(unix)]
            if rel.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_gets_a_checkable_service_file() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            let dir = tempfile::tempdir().unwrap();
            let root = create(dir.path(), "order-audit", lang).unwrap();
            let files = files("order-audit", lang);
            let text = std::fs::read_to_string(root.join("service.toml")).unwrap();
            assert!(text.contains("name = \"ORDER_AUDIT\""), "{lang}: {text}");
            assert!(text.contains("subject = \"order-audit.in\""), "{lang}");
            assert!(
                files.iter().any(|(p, _)| p.ends_with("wit/world.wit")),
                "{lang}"
            );
            assert!(
                files
                    .iter()
                    .filter(|(p, _)| !p.contains("wit/"))
                    .all(|(_, t)| !t.contains("{name}") && !t.contains("{module}")),
                "{lang}: unfilled placeholder"
            );
            // The component is not built yet, so only that is missing.
            let err = crate::config::Config::load_with_env(root.join("service.toml"), |_| None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(".component: cannot read"), "{lang}: {err}");
            assert!(!err.contains("2 problems"), "{lang}: {err}");
        }
    }

    #[test]
    fn refuses_bad_names_and_existing_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            create(dir.path(), "Bad Name", Lang::Rust),
            Err(ScaffoldError::BadName(_))
        ));
        assert!(matches!(
            create(dir.path(), "9lives", Lang::Rust),
            Err(ScaffoldError::BadName(_))
        ));
        create(dir.path(), "twice", Lang::Python).unwrap();
        assert_eq!(
            create(dir.path(), "twice", Lang::Python)
                .unwrap_err()
                .to_string(),
            format!(
                "{} already exists; choose another name or remove it",
                dir.path().join("twice").display()
            )
        );
    }
}
