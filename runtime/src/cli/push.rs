//! `natsapp-wasm push FILE|oci://… BUCKET/NAME`: reads a component from a
//! file or an OCI registry (checking every digest), checks that it is a
//! handler component, stores it in a JetStream Object Store as a version of
//! NAME named by its SHA-256 (never overwriting one), links NAME to it, and
//! prints the reference a subscriber's `component` takes.

use super::remote::{runtime, ConnectionArgs};
use natsapp_wasm::config::ComponentSource;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::nats::objects;
use natsapp_wasm::oci::{self, Access, Credentials, OciReference};
use natsapp_wasm::wasm::cache::ComponentCache;
use natsapp_wasm::wasm::{PoolSize, WasmRuntime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component: a .wasm file, or an artifact in an OCI registry,
    /// oci://REGISTRY/REPOSITORY:TAG or …@sha256:DIGEST (with both, the
    /// tag must name that manifest).
    source: String,
    /// Where to store it: BUCKET/NAME.
    target: String,
    /// Create the object store bucket when it is missing.
    #[arg(long)]
    create: bool,
    /// Replicas of a bucket created by --create.
    #[arg(long, default_value_t = 1, requires = "create")]
    replicas: usize,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// How to read from an OCI registry.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// The registry user (with --registry-password); without one, Docker's
    /// config.json ($DOCKER_CONFIG or ~/.docker) is read.
    #[arg(long)]
    registry_username: Option<String>,
    /// The registry user's password.
    #[arg(long, env = "NATSAPP_REGISTRY_PASSWORD", hide_env_values = true)]
    registry_password: Option<String>,
    /// Talk to the registry over plain HTTP (a registry on loopback).
    #[arg(long)]
    plain_http: bool,
}

/// The component `source` names, read and checked; prints where from
/// when it is a registry's.
async fn read(source: &str, registry: RegistryArgs, name: &str) -> Result<Vec<u8>, ExitCode> {
    if !source.starts_with("oci://") {
        return checked_component(Path::new(source), name).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        });
    }
    let failed = |e: oci::RegistryError| {
        eprintln!("error: {}", ErrorChain(&e));
        ExitCode::from(if e.is_input() { 2 } else { 1 })
    };
    let reference = OciReference::parse(source).map_err(failed)?;
    // The password may come from the environment for every push; only a
    // user given without one is a mistake.
    let given = match (registry.registry_username, registry.registry_password) {
        (Some(user), Some(password)) => Some((user, password)),
        (Some(_), None) => {
            eprintln!("error: --registry-username needs --registry-password (or NATSAPP_REGISTRY_PASSWORD)");
            return Err(ExitCode::from(2));
        }
        (None, _) => None,
    };
    let credentials =
        Credentials::for_registry(reference.registry(), given).map_err(|e| failed(e.into()))?;
    let access = Access {
        credentials,
        plain_http: registry.plain_http,
    };
    let pulled = oci::pull(&reference, &access).await.map_err(failed)?;
    println!(
        "pulled {reference} (manifest {}, component layer {})",
        pulled.manifest, pulled.layer
    );
    checked_bytes(
        pulled.bytes,
        &ComponentSource::File(PathBuf::from(source)),
        name,
    )
    .map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The bytes of the component `path`, once compiled as `subscriber`'s
/// handler: one that cannot serve is refused here, not by every replica
/// that would read it.
pub fn checked_component(path: &Path, subscriber: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    checked_bytes(
        bytes,
        &ComponentSource::File(path.to_path_buf()),
        subscriber,
    )
}

/// `bytes`, once compiled as `subscriber`'s handler; `source` names them.
fn checked_bytes(
    bytes: Vec<u8>,
    source: &ComponentSource,
    subscriber: &str,
) -> Result<Vec<u8>, String> {
    let pool = PoolSize {
        instances: 1,
        max_memory: natsapp_wasm::config::defaults::MEMORY,
    };
    let wasm = WasmRuntime::new(ComponentCache::from_env(), pool)
        .map_err(|e| ErrorChain(&e).to_string())?;
    wasm.load_bytes(&bytes, source, subscriber)
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
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let bytes = match read(&args.source, args.registry, name).await {
            Ok(b) => b,
            Err(code) => return code,
        };
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
