//! `natsapp-wasm deploy FRAGMENT.toml BUCKET/KEY [--wait]`, `rollback
//! BUCKET/KEY [--revision N]` and `status FILE|BUCKET`: deploying service
//! fragments through key-value keys that every replica watches, and
//! asking the replicas what they run.

use super::remote::{runtime, ConnectionArgs};
use natsapp_wasm::config::{Config, LocalComponent};
use natsapp_wasm::deploy::status::{self, Answer};
use natsapp_wasm::deploy::{publish, rollout::Refusal};
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::nats::objects;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The fragment: what an included file holds (subscribers; tenants
    /// only in the platform's keys).
    fragment: PathBuf,
    /// Where: BUCKET/KEY.
    target: String,
    /// Wait until every replica reports the new revision applied (exit 0)
    /// or refused (exit 1, naming the refusals).
    #[arg(long)]
    wait: bool,
    /// With --wait: how many replicas to wait for (default: those that
    /// answer, until none has for 2 s).
    #[arg(long, requires = "wait")]
    replicas: Option<usize>,
    /// With --wait: how long to wait at most.
    #[arg(long, default_value = "120s", value_parser = seconds, requires = "wait")]
    timeout: Duration,
    /// The object store components named by file are pushed to.
    #[arg(long, default_value = "COMPONENTS")]
    components: String,
    /// Create the key-value bucket (64 revisions of history) and the
    /// object store when they are missing.
    #[arg(long)]
    create: bool,
    /// Replicas of buckets created by --create.
    #[arg(long = "bucket-replicas", default_value_t = 1, requires = "create")]
    bucket_replicas: usize,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// BUCKET/KEY.
    target: String,
    /// The revision to go back to (default: the one before the latest).
    #[arg(long)]
    revision: Option<u64>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A service file (every bucket it reads fragments from, each with the
    /// identity that reads it), or a bucket name (with connection flags).
    target: String,
    /// How many replicas to wait for (default: those that answer, until
    /// none has for 2 s).
    #[arg(long)]
    replicas: Option<usize>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

fn seconds(s: &str) -> Result<Duration, String> {
    natsapp_wasm::config::Dur::parse(s).map(|d| d.0)
}

fn bucket_key(target: &str) -> Result<(&str, &str), ExitCode> {
    target
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| {
            eprintln!("error: {target:?} is not BUCKET/KEY");
            ExitCode::from(2)
        })
}

/// Checks every component named by file compiles as a handler; their bytes.
fn compile(dir: &Path, local: &[LocalComponent]) -> Result<Vec<(String, Vec<u8>)>, String> {
    local
        .iter()
        .map(|c| {
            let bytes = super::push::checked_component(&dir.join(&c.path), &c.subscriber)?;
            Ok((c.subscriber.clone(), bytes))
        })
        .collect()
}

pub fn deploy(args: DeployArgs) -> ExitCode {
    let (bucket, key) = match bucket_key(&args.target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let text = match std::fs::read_to_string(&args.fragment) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.fragment.display());
            return ExitCode::from(2);
        }
    };
    let local = match natsapp_wasm::config::local_components(&args.fragment, &text) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    let dir = args
        .fragment
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let compiled = match compile(dir, &local) {
        Ok(c) => c,
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
        let client = match args.connection.client("natsapp-wasm deploy").await {
            Ok(c) => c,
            Err(code) => return code,
        };
        let js = async_nats::jetstream::new(client.clone());
        let create = args.create.then_some(args.bucket_replicas);
        let mut objects = BTreeMap::new();
        for (subscriber, bytes) in &compiled {
            match objects::push(&js, &args.components, subscriber, bytes, create).await {
                Ok(pushed) => {
                    println!(
                        "component of {subscriber}: {}/{} ({})",
                        args.components,
                        pushed.object,
                        if pushed.stored {
                            "stored"
                        } else {
                            "already stored"
                        }
                    );
                    objects.insert(
                        subscriber.clone(),
                        (format!("{}/{subscriber}", args.components), pushed.digest),
                    );
                }
                Err(e) => {
                    eprintln!("error: {}", ErrorChain(&e));
                    return ExitCode::from(1);
                }
            }
        }
        let text = match natsapp_wasm::config::with_objects(&text, &objects) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", args.fragment.display());
                return ExitCode::from(2);
            }
        };
        let revision = match publish::put(&js, bucket, key, &text, create).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", ErrorChain(&e));
                return ExitCode::from(1);
            }
        };
        println!("deployed {bucket}/{key} revision {revision}");
        if !args.wait {
            return ExitCode::SUCCESS;
        }
        wait(&client, bucket, key, revision, args.replicas, args.timeout).await
    })
}

/// What one replica says of revision `revision` of `key`.
enum Verdict<'a> {
    Applied,
    Refused(&'a Refusal),
    Waiting,
}

fn verdict<'a>(answer: &'a Answer, key: &str, revision: u64) -> Verdict<'a> {
    let Some(k) = answer.keys.iter().find(|k| k.key == key) else {
        return Verdict::Waiting;
    };
    match (&k.refused, k.revision) {
        (Some(r), _) if r.revision >= revision => Verdict::Refused(r),
        (_, Some(applied)) if applied >= revision => Verdict::Applied,
        _ => Verdict::Waiting,
    }
}

/// Waits until every replica has applied or refused `revision` of `key`.
async fn wait(
    client: &async_nats::Client,
    bucket: &str,
    key: &str,
    revision: u64,
    replicas: Option<usize>,
    timeout: Duration,
) -> ExitCode {
    let started = Instant::now();
    loop {
        let answers = match status::ask(client, bucket, replicas).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {}", ErrorChain(&e));
                return ExitCode::from(1);
            }
        };
        let enough = replicas.is_none_or(|n| answers.len() >= n) && !answers.is_empty();
        let decided = answers
            .iter()
            .all(|a| !matches!(verdict(a, key, revision), Verdict::Waiting));
        if enough && decided {
            let mut refused = 0;
            for a in &answers {
                match verdict(a, key, revision) {
                    Verdict::Applied => {
                        println!("replica {}: applied revision {revision}", a.replica)
                    }
                    Verdict::Refused(r) => {
                        refused += 1;
                        println!(
                            "replica {}: refused revision {}: {}",
                            a.replica, r.revision, r.reason
                        );
                    }
                    Verdict::Waiting => {}
                }
            }
            if refused > 0 {
                eprintln!(
                    "error: {refused} of {} replicas refused {bucket}/{key} revision {revision}",
                    answers.len()
                );
                return ExitCode::from(1);
            }
            println!(
                "every replica ({}) applied {bucket}/{key} revision {revision}",
                answers.len()
            );
            return ExitCode::SUCCESS;
        }
        if started.elapsed() >= timeout {
            let waiting: Vec<&str> = answers
                .iter()
                .filter(|a| matches!(verdict(a, key, revision), Verdict::Waiting))
                .map(|a| a.replica.as_str())
                .collect();
            eprintln!(
                "error: after {timeout:?}, {} replicas answered; still waiting for revision {revision} of {bucket}/{key}: {}",
                answers.len(),
                if waiting.is_empty() { "(fewer replicas than asked for)".to_string() } else { waiting.join(", ") }
            );
            return ExitCode::from(1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn rollback(args: RollbackArgs) -> ExitCode {
    let (bucket, key) = match bucket_key(&args.target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match args.connection.client("natsapp-wasm rollback").await {
            Ok(c) => c,
            Err(code) => return code,
        };
        let js = async_nats::jetstream::new(client);
        match publish::rollback(&js, bucket, key, args.revision).await {
            Ok(done) => {
                println!(
                    "rolled {bucket}/{key} back to revision {}: it is revision {} now",
                    done.to, done.revision
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", ErrorChain(&e));
                ExitCode::from(match e {
                    publish::PublishError::NoRevision { .. }
                    | publish::PublishError::NothingEarlier { .. } => 2,
                    _ => 1,
                })
            }
        }
    })
}

fn print_status(answers: &[Answer]) {
    for a in answers {
        if a.keys.is_empty() {
            println!("{}  {}  (nothing deployed)", a.replica, a.bucket);
        }
        for k in &a.keys {
            let revision = k
                .revision
                .map_or("none".to_string(), |r| format!("revision {r}"));
            let handlers: Vec<String> = k
                .handlers
                .iter()
                .map(|(name, digest)| format!("{name}={}", &digest[..digest.len().min(12)]))
                .collect();
            let refused = k.refused.as_ref().map_or(String::new(), |r| {
                format!("  refused revision {}: {}", r.revision, r.reason)
            });
            println!(
                "{}  {}/{}  {revision}  {}{refused}",
                a.replica,
                a.bucket,
                k.key,
                handlers.join(" ")
            );
        }
    }
}

pub fn status(args: StatusArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        // A service file: each bucket it reads, asked with the identity
        // that reads it.
        let asks: Vec<(natsapp_wasm::config::NatsConfig, String)> =
            if args.target.ends_with(".toml") {
                let config = match Config::load(&args.target) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {}", ErrorChain(&e));
                        return ExitCode::from(2);
                    }
                };
                config
                    .fragment_sources()
                    .into_iter()
                    .map(|(tenant, keys)| {
                        let nats = tenant.map_or_else(|| config.nats.clone(), |t| t.nats.clone());
                        (nats, keys.bucket.clone())
                    })
                    .collect()
            } else {
                match args.connection.nats() {
                    Ok(nats) => vec![(nats, args.target.clone())],
                    Err(e) => {
                        eprintln!("error: {}", ErrorChain(&e));
                        return ExitCode::from(2);
                    }
                }
            };
        let mut failed = false;
        for (nats, bucket) in asks {
            let client = match super::remote::connect(&nats, "natsapp-wasm status").await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {}", ErrorChain(&e));
                    failed = true;
                    continue;
                }
            };
            match status::ask(&client, &bucket, args.replicas).await {
                Ok(answers) if answers.is_empty() => {
                    println!("{bucket}: no replica answered");
                }
                Ok(answers) => print_status(&answers),
                Err(e) => {
                    eprintln!("error: {}", ErrorChain(&e));
                    failed = true;
                }
            }
        }
        if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    })
}
