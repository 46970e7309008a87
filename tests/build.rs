//! Builds the handler components in guests/ for wasm32-wasip2 once per
//! change and exposes their paths as constants (`guests::ECHO`, …).

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
];

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
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
}
