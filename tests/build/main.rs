//! Builds the handler components in guests/ for wasm32-wasip2 once per
//! change and exposes their paths as constants (`guests::ECHO`, …): the
//! Rust guests with cargo, the Python, JavaScript and C guests with their
//! tools, side by side and cached outside the clone (cache.rs).

mod cache;

use cache::Recipe;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant, crate folder under guests/); the component is `<folder with _>.wasm`.
const GUESTS: &[(&str, &str)] = &[
    ("ECHO", "echo"),
    ("ORDER_PROCESSOR", "order-processor"),
    ("TESTKIT", "testkit"),
    ("NOT_A_HANDLER", "not-a-handler"),
    ("OTHER_VERSION", "other-version"),
    ("UNKNOWN_IMPORT", "unknown-import"),
    ("NOOP", "noop"),
    ("RELAY", "relay"),
    ("COMPAT_0_1_0", "compat-0-1-0"),
    ("COMPAT_0_1_2", "compat-0-1-2"),
    ("PAYMENT", "payment"),
];

/// componentize-py: `COMPONENTIZE_PY`, else the repository's .venv.
fn componentize_py(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("COMPONENTIZE_PY") {
        return PathBuf::from(p);
    }
    let venv = root.join(".venv/bin/componentize-py");
    assert!(
        venv.exists(),
        "componentize-py not found at {}: run ./scripts/install-prereqs.sh (pip componentize-py==0.25.1 into .venv) or set COMPONENTIZE_PY",
        venv.display()
    );
    venv
}

/// (constant, folder under guests/python/): built with componentize-py to
/// `guests/target/python/<folder with _>.wasm`.
const PYTHON_GUESTS: &[(&str, &str)] = &[
    ("PY_ORDER_PROCESSOR", "order-processor"),
    ("PY_KIT", "kit"),
    ("PY_NOOP", "noop"),
    ("PY_PAYMENT", "payment"),
];

fn python_recipes(root: &Path, recipes: &mut Vec<Recipe>, consts: &mut String) {
    println!("cargo:rerun-if-env-changed=COMPONENTIZE_PY");
    let tool = componentize_py(root);
    let version = cache::tool_version(&tool, &["--version"]);
    let out_dir = root.join("guests/target/python");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (name, dir) in PYTHON_GUESTS {
        let src = root.join("guests/python").join(dir);
        let out = out_dir.join(format!("{}.wasm", dir.replace('-', "_")));
        let mut command = Command::new(&tool);
        command
            .arg("-d")
            .arg(root.join("wit"))
            .args([
                "-w",
                "handler-sdk-warm-up",
                "componentize",
                "natsapp_main",
                "-p",
            ])
            .arg(root.join("guest-sdk/python"))
            .arg("-p")
            .arg(&src)
            .arg("-o")
            .arg(&out);
        consts.push_str(&format!(
            "/// Built Python component `{dir}`.\npub const {name}: &str = {:?};\n",
            out.display().to_string()
        ));
        recipes.push(Recipe {
            what: format!("the Python guest {}", src.display()),
            inputs: vec![root.join("wit"), root.join("guest-sdk/python"), src],
            tools: vec![version.clone()],
            command,
            out,
            hint: "componentize-py 0.25.1 comes from ./scripts/install-prereqs.sh",
        });
    }
}

/// (constant, folder under guests/js/): built with guest-sdk/js/build.sh
/// (componentize-js) to `guests/target/js/<folder with _>.wasm`.
const JS_GUESTS: &[(&str, &str)] = &[
    ("JS_ORDER_PROCESSOR", "order-processor"),
    ("JS_KIT", "kit"),
    ("JS_NOOP", "noop"),
    ("JS_PAYMENT", "payment"),
];

fn js_recipes(root: &Path, recipes: &mut Vec<Recipe>, consts: &mut String) {
    let sdk = root.join("guest-sdk/js");
    assert!(
        sdk.join("node_modules/.bin/componentize-js").exists(),
        "componentize-js not installed in {}: run ./scripts/install-prereqs.sh (npm ci there)",
        sdk.display()
    );
    let node = cache::tool_version(Path::new("node"), &["--version"]);
    let out_dir = root.join("guests/target/js");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (name, dir) in JS_GUESTS {
        let src = root.join("guests/js").join(dir);
        let out = out_dir.join(format!("{}.wasm", dir.replace('-', "_")));
        let mut command = Command::new(sdk.join("build.sh"));
        command.arg(&src).arg(&out);
        consts.push_str(&format!(
            "/// Built JavaScript component `{dir}`.\npub const {name}: &str = {:?};\n",
            out.display().to_string()
        ));
        // The SDK folder without node_modules; package-lock.json pins
        // componentize-js and the bundler.
        recipes.push(Recipe {
            what: format!("the JavaScript guest {}", src.display()),
            inputs: vec![root.join("wit"), sdk.clone(), src],
            tools: vec![node.clone()],
            command,
            out,
            hint: "componentize-js 0.23 comes from ./scripts/install-prereqs.sh",
        });
    }
}

/// (constant, folder under guests/c/): built with guest-sdk/c/build.sh to
/// `guests/target/c/<folder with _>.wasm`.
const C_GUESTS: &[(&str, &str)] = &[("C_KIT", "kit")];

fn c_recipes(root: &Path, recipes: &mut Vec<Recipe>, consts: &mut String) {
    let sdk = root.join("guest-sdk/c");
    let tools = [".tools/bin/wit-bindgen", ".venv/bin/wasm-tools"].map(|t| root.join(t));
    for tool in &tools {
        assert!(
            tool.exists(),
            "{} not found: run ./scripts/install-prereqs.sh (the C recipe's tools)",
            tool.display()
        );
    }
    let mut versions: Vec<String> = tools
        .iter()
        .map(|t| cache::tool_version(t, &["--version"]))
        .collect();
    versions.push(cache::tool_version(Path::new("clang-14"), &["--version"]));
    let out_dir = root.join("guests/target/c");
    std::fs::create_dir_all(&out_dir).unwrap();
    let adapter = out_dir.join("wasi_snapshot_preview1.reactor.wasm");
    std::fs::write(
        &adapter,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap();
    for (name, dir) in C_GUESTS {
        let src = root.join("guests/c").join(dir);
        let out = out_dir.join(format!("{}.wasm", dir.replace('-', "_")));
        let mut command = Command::new(sdk.join("build.sh"));
        command.arg(&src).arg(&out).arg(&adapter);
        consts.push_str(&format!(
            "/// Built C component `{dir}`.\npub const {name}: &str = {:?};\n",
            out.display().to_string()
        ));
        recipes.push(Recipe {
            what: format!("the C guest {}", src.display()),
            inputs: vec![root.join("wit"), sdk.clone(), adapter.clone(), src],
            tools: versions.clone(),
            command,
            out,
            hint: "clang-14, lld-14 and wasi-libc come from ./scripts/install-prereqs.sh",
        });
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let guests = GUESTS.iter().map(|(_, dir)| format!("guests/{dir}"));
    let shared = [
        "guests/Cargo.toml",
        "guest-sdk/rust/src",
        "guest-sdk/rust/Cargo.toml",
        "wit",
    ]
    .map(String::from);
    for watched in guests.chain(shared) {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("guests/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("guests/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cannot run cargo to build the guests");
    if !output.status.success() {
        panic!(
            "building the guest components failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut consts = String::new();
    for (name, dir) in GUESTS {
        let file = dir.replace('-', "_");
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{file}.wasm"));
        assert!(
            Path::new(&path).exists(),
            "guest {file} was not built at {}",
            path.display()
        );
        consts.push_str(&format!(
            "/// Built component `{file}`.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let mut recipes = Vec::new();
    python_recipes(&root, &mut recipes, &mut consts);
    js_recipes(&root, &mut recipes, &mut consts);
    c_recipes(&root, &mut recipes, &mut consts);
    cache::build_all(&root, recipes);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
}
