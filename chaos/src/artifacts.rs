//! Finds what the chaos run drives: the `natsapp-wasm` binary and the
//! order-processor component, with how to build each when it is missing.

use anyhow::bail;
use std::path::{Path, PathBuf};

/// The binary and component every scenario runs.
pub struct Artifacts {
    /// `natsapp-wasm`.
    pub natsapp: PathBuf,
    /// `order_processor.wasm` (it must honour the `work_ms` config value).
    pub component: PathBuf,
}

impl Artifacts {
    /// `NATSAPP_BIN`, else `natsapp-wasm` beside this program, else in
    /// `target/debug` or `target/release`; `ORDER_PROCESSOR_WASM`, else
    /// the guests workspace's release build.
    pub fn locate() -> anyhow::Result<Artifacts> {
        Ok(Artifacts {
            natsapp: natsapp_bin()?,
            component: order_processor()?,
        })
    }
}

fn natsapp_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATSAPP_BIN") {
        return existing(PathBuf::from(p), "NATSAPP_BIN");
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join("natsapp-wasm")];
    if let Some(target) = dir.parent() {
        candidates.push(target.join("debug/natsapp-wasm"));
        candidates.push(target.join("release/natsapp-wasm"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "natsapp-wasm not found (looked at {}): build it with `cargo build -p natsapp-wasm`, or set NATSAPP_BIN",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn order_processor() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORDER_PROCESSOR_WASM") {
        return existing(PathBuf::from(p), "ORDER_PROCESSOR_WASM");
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guests/target/wasm32-wasip2/release/order_processor.wasm");
    if !path.is_file() {
        bail!(
            "the order-processor component {} is missing: build it with \
             `cargo build --manifest-path guests/Cargo.toml --target wasm32-wasip2 --release` \
             (or `cargo build -p natsapp-wasm-tests`), or set ORDER_PROCESSOR_WASM",
            path.display()
        );
    }
    Ok(path.canonicalize()?)
}

fn existing(path: PathBuf, var: &str) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("{var} names {}, which is not a file", path.display());
    }
    Ok(path)
}
