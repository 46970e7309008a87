//! `natsapp-wasm push FILE BUCKET/NAME`: checks that FILE is a handler
//! component, stores it in a JetStream Object Store as a version of NAME
//! named by its SHA-256 (never overwriting one), links NAME to it, and
//! prints the reference a subscriber's `component` takes.

use super::remote::{runtime, ConnectionArgs};
use natsapp_wasm::config::ComponentSource;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::nats::objects;
use natsapp_wasm::wasm::cache::ComponentCache;
use natsapp_wasm::wasm::{PoolSize, WasmRuntime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// Where to store it: BUCKET/NAME.
    target: String,
    /// Create the object store bucket when it is missing.
    #[arg(long)]
    create: bool,
    /// Replicas of a bucket created by --create.
    #[arg(long, default_value_t = 1, requires = "create")]
    replicas: usize,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// The bytes of the component `path`, once compiled as `subscriber`'s
/// handler: one that cannot serve is refused here, not by every replica
/// that would read it.
pub fn checked_component(path: &Path, subscriber: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let pool = PoolSize {
        instances: 1,
        max_memory: natsapp_wasm::config::defaults::MEMORY,
    };
    let wasm = WasmRuntime::new(ComponentCache::from_env(), pool)
        .map_err(|e| ErrorChain(&e).to_string())?;
    wasm.load_bytes(
        &bytes,
        &ComponentSource::File(path.to_path_buf()),
        subscriber,
    )
    .map_err(|e| ErrorChain(&e).to_string())?;
    Ok(bytes)
}

pub fn run(args: PushArgs) -> ExitCode {
    let Some((bucket, name)) = args
        .target
        .split_once('/')
        .filter(|(b, n)| !b.is_empty() && !n.is_empty())
    else {
        eprintln!("error: {:?} is not BUCKET/NAME", args.target);
        return ExitCode::from(2);
    };
    let bytes = match checked_component(&args.file, name) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match args.connection.client("natsapp-wasm push").await {
            Ok(c) => c,
            Err(code) => return code,
        };
        let js = async_nats::jetstream::new(client);
        let create = args.create.then_some(args.replicas);
        match objects::push(&js, bucket, name, &bytes, create).await {
            Ok(pushed) => {
                let how = if pushed.stored {
                    "stored"
                } else {
                    "already stored"
                };
                println!(
                    "{how} {bucket}/{} ({} bytes); {bucket}/{name} links to it",
                    pushed.object,
                    bytes.len()
                );
                println!(
                    "component = {{ object = \"{bucket}/{name}\", sha256 = \"{}\" }}",
                    pushed.digest
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", ErrorChain(&e));
                ExitCode::from(1)
            }
        }
    })
}
