//! The SDKs as packages of their languages — a crate, a wheel, an npm
//! package — each carrying the WIT package it is written against, and
//! versioned as that WIT package is.

use natsapp_wasm_tests::*;
use std::path::Path;
use std::process::Command;

/// The version of the WIT package `natsapp:handler` in wit/.
fn wit_version() -> String {
    let world = std::fs::read_to_string(repo_root().join("wit/world.wit")).unwrap();
    world
        .lines()
        .find_map(|l| l.trim().strip_prefix("package natsapp:handler@"))
        .and_then(|v| v.strip_suffix(';'))
        .expect("wit/world.wit declares package natsapp:handler@VERSION;")
        .to_string()
}

/// Copies the files of `from` (not its folders named in `skip`) into `to`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), skip);
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_rust_sdk_passes_cargo_package() {
    let version = wit_version();
    let target = tempfile::tempdir().unwrap();
    let out = succeeds(
        Command::new("cargo")
            .args(["package", "--allow-dirty", "--quiet", "--manifest-path"])
            .arg(repo_root().join("guest-sdk/rust/Cargo.toml"))
            .arg("--target-dir")
            .arg(target.path())
            .env_remove("CARGO_TARGET_DIR"),
    );
    let crate_file = target
        .path()
        .join(format!("package/natsapp-guest-{version}.crate"));
    assert!(
        crate_file.exists(),
        "no {} after cargo package: {}",
        crate_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = succeeds(Command::new("tar").arg("tzf").arg(&crate_file));
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in [
        "src/lib.rs",
        "src/kv.rs",
        "src/http.rs",
        "wit/world.wit",
        "wit/keyvalue.wit",
    ] {
        assert!(
            listed.contains(&format!("natsapp-guest-{version}/{file}")),
            "{file} missing from the crate:\n{listed}"
        );
    }
}

#[test]
fn the_python_sdk_builds_a_wheel() {
    let version = wit_version();
    let dir = tempfile::tempdir().unwrap();
    let sdk = dir.path().join("sdk");
    copy_tree(
        &repo_root().join("guest-sdk/python"),
        &sdk,
        &["__pycache__"],
    );
    let wheels = dir.path().join("wheels");
    succeeds(
        Command::new(repo_root().join(".venv/bin/python"))
            .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "-w"])
            .arg(&wheels)
            .arg(&sdk),
    );
    let wheel = wheels.join(format!("natsapp_wasm_guest-{version}-py3-none-any.whl"));
    assert!(wheel.exists(), "no {}", wheel.display());
    let listed = succeeds(
        Command::new(repo_root().join(".venv/bin/python"))
            .args(["-m", "zipfile", "-l"])
            .arg(&wheel),
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in [
        "natsapp/__init__.py",
        "natsapp_main.py",
        "natsapp_vendor.py",
    ] {
        assert!(
            listed.contains(file),
            "{file} missing from the wheel:\n{listed}"
        );
    }
}

#[test]
fn the_javascript_sdk_packs() {
    let version = wit_version();
    let dir = tempfile::tempdir().unwrap();
    // The SDK and the WIT package as they sit in the repository.
    let sdk = dir.path().join("guest-sdk/js");
    copy_tree(&repo_root().join("guest-sdk/js"), &sdk, &["node_modules"]);
    copy_tree(&repo_root().join("wit"), &dir.path().join("wit"), &[]);
    let out = succeeds(
        Command::new("npm")
            .args(["pack", "--json", "--loglevel=error", "--pack-destination"])
            .arg(dir.path())
            .current_dir(&sdk),
    );
    let packed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(packed[0]["name"], "natsapp-guest-js");
    assert_eq!(packed[0]["version"], version.as_str());
    let files: Vec<&str> = packed[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for file in [
        "natsapp.js",
        "main.js",
        "bundle.mjs",
        "build.sh",
        "wit/world.wit",
    ] {
        assert!(
            files.contains(&file),
            "{file} missing from the package: {files:?}"
        );
    }
    assert!(dir
        .path()
        .join(format!("natsapp-guest-js-{version}.tgz"))
        .exists());
    assert!(!sdk.join("wit").exists(), "postpack removes the copied WIT");
}
