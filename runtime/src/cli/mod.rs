//! Command line: `natsapp-wasm run FILE` (SIGHUP reloads), `natsapp-wasm reload FILE`,
//! `natsapp-wasm check FILE`,
//! `natsapp-wasm docs FILE` (AsyncAPI) and
//! `natsapp-wasm new NAME --lang rust|python|js|c`, `natsapp-wasm cache dir|clear`,
//! `natsapp-wasm invoke COMPONENT|FILE` (one message, no server: see `invoke`),
//! `natsapp-wasm dev [DIR]` (build, run, rebuild and reload on change: see `dev`),
//! `natsapp-wasm push FILE BUCKET/NAME` (a component into an object store: see `push`),
//! `natsapp-wasm deploy FRAGMENT BUCKET/KEY`, `rollback BUCKET/KEY`, `status FILE|BUCKET`
//! (fragments through key-value keys: see `deploy`),
//! `natsapp-wasm redrive FILE --subscriber NAME` (dead letters back: see `redrive`).
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.

pub mod allocator;
mod deploy;
mod dev;
mod invoke;
mod push;
mod redrive;
mod remote;

use clap::{Parser, Subcommand};
use natsapp_wasm::config::Config;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::observability::logs::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs NATS JetStream message handlers compiled as sandboxed WASI components.
#[derive(Parser)]
#[command(name = "natsapp-wasm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as text or as JSON lines (one object per event).
    #[arg(
        long,
        global = true,
        env = "NATSAPP_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT or SIGTERM, then stop gracefully;
    /// SIGHUP reloads the file and components.
    Run {
        /// The service.toml file.
        file: PathBuf,
    },
    /// Ask every running replica of the file's service to reload (as SIGHUP
    /// does): over NATS, on `<service>.reload`; prints each one's answer.
    Reload {
        /// The service.toml file (its [service] name and [nats] are used).
        file: PathBuf,
    },
    /// Validate the file and every component without connecting; print the plan.
    Check {
        /// The service.toml file.
        file: PathBuf,
    },
    /// Print an AsyncAPI 3.0 document (JSON) of the service's channels.
    Docs {
        /// The service.toml file.
        file: PathBuf,
    },
    /// Write a new handler project: handler, SDK, WIT, build command, service.toml.
    New {
        /// Project name: lowercase letters, digits and '-' (also its subjects and stream).
        name: String,
        /// rust, python, js or c.
        #[arg(long, default_value = "rust")]
        lang: natsapp_wasm::scaffold::Lang,
        /// Where to create it (default: the current folder).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a handler on one message without a NATS server: its verdict,
    /// publishes, requests, key-value writes, acknowledgements and output.
    /// Exit code: 0 ack, 3 retry, 4 reject, 5 failure, 2 bad input.
    Invoke(Box<invoke::InvokeArgs>),
    /// Develop a project made by `new`: start a local nats-server when the
    /// configured one does not answer, build the handler, run the service,
    /// and rebuild and reload whenever a source changes.
    Dev(Box<dev::DevArgs>),
    /// Store a component in a JetStream Object Store as a version named by
    /// its SHA-256 (never overwriting one) and link NAME to it; prints the
    /// `component = { object, sha256 }` a subscriber takes.
    Push(Box<push::PushArgs>),
    /// Deploy a fragment (subscribers, as an included file holds them) to
    /// a key-value key every replica watches: checks it and compiles its
    /// components, pushes those named by file to the object store and
    /// names them by digest, puts it; --wait waits for every replica.
    Deploy(Box<deploy::DeployArgs>),
    /// Put an earlier revision of a deployed key again (default: the one
    /// before the latest).
    Rollback(Box<deploy::RollbackArgs>),
    /// Ask every replica what it runs of each deployed key: revision,
    /// components' digests, last refusal.
    Status(Box<deploy::StatusArgs>),
    /// Put a subscriber's dead letters back on their original subjects,
    /// each removed only once its copy is stored; a stopped redrive
    /// resumes without losing or doubling one. --dry-run lists them.
    Redrive(Box<redrive::RedriveArgs>),
    /// The compiled-component cache (NATSAPP_CACHE_DIR, default ~/.cache/natsapp-wasm).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Print the cache folder.
    Dir,
    /// Remove every compiled component from it.
    Clear,
}

fn new_project(dir: &std::path::Path, name: &str, lang: natsapp_wasm::scaffold::Lang) -> ExitCode {
    match natsapp_wasm::scaffold::create(dir, name, lang) {
        Ok(root) => {
            let build = match lang {
                natsapp_wasm::scaffold::Lang::Rust => {
                    "cargo build --target wasm32-wasip2 --release"
                }
                _ => "./build.sh",
            };
            println!("created {} ({lang})", root.display());
            println!(
                "next: cd {} && {build} && natsapp-wasm check service.toml",
                root.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            ExitCode::from(2)
        }
    }
}

fn cache(action: CacheAction) -> ExitCode {
    let cache = natsapp_wasm::wasm::cache::ComponentCache::from_env();
    let Some(dir) = cache.dir() else {
        println!("the cache is off (NATSAPP_CACHE_DIR=off)");
        return ExitCode::SUCCESS;
    };
    match action {
        CacheAction::Dir => println!("{}", dir.display()),
        CacheAction::Clear => match cache.clear() {
            Ok(n) => println!("removed {n} compiled component(s) from {}", dir.display()),
            Err(e) => {
                eprintln!("error: cannot clear {}: {}", dir.display(), ErrorChain(&e));
                return ExitCode::from(1);
            }
        },
    }
    ExitCode::SUCCESS
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match cli.command {
        Command::Run { ref file }
        | Command::Check { ref file }
        | Command::Docs { ref file }
        | Command::Reload { ref file } => file,
        Command::Cache { action } => return cache(action),
        Command::Invoke(args) => return invoke::run(*args, cli.log_format),
        Command::Dev(args) => return dev::run(*args, cli.log_format),
        Command::New { name, lang, dir } => return new_project(&dir, &name, lang),
        Command::Push(args) => return push::run(*args),
        Command::Deploy(args) => return deploy::deploy(*args),
        Command::Rollback(args) => return deploy::rollback(*args),
        Command::Status(args) => return deploy::status(*args),
        Command::Redrive(args) => return redrive::run(*args),
    };
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            natsapp_wasm::observability::logs::init(false, cli.log_format);
            report_error(cli.log_format, &e);
            return ExitCode::from(2);
        }
    };
    natsapp_wasm::observability::logs::init(config.service.debug, cli.log_format);
    natsapp_wasm::observability::logs::describe_service(&config);
    let result = match cli.command {
        Command::Check { .. } => natsapp_wasm::check(&config).map(|plan| print!("{plan}")),
        Command::Docs { .. } => {
            let doc = natsapp_wasm::asyncapi::document(&config);
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            Ok(())
        }
        Command::Cache { .. }
        | Command::New { .. }
        | Command::Invoke(_)
        | Command::Dev(_)
        | Command::Push(_)
        | Command::Deploy(_)
        | Command::Rollback(_)
        | Command::Status(_)
        | Command::Redrive(_) => {
            unreachable!("handled before loading a configuration")
        }
        Command::Run { .. } | Command::Reload { .. } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    report(
                        cli.log_format,
                        &format!("cannot start the async runtime: {}", ErrorChain(&e)),
                    );
                    return ExitCode::from(1);
                }
            };
            if let Command::Reload { .. } = cli.command {
                return runtime.block_on(reload(&config, cli.log_format));
            }
            runtime.block_on(run(config))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(cli.log_format, &e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Starts the service, reloads it on SIGHUP, stops it on SIGINT or SIGTERM.
async fn run(config: Config) -> Result<(), natsapp_wasm::Error> {
    // Listen before starting: a SIGTERM while components compile or the
    // service connects is a graceful stop too, and a SIGHUP a reload once
    // it runs, not death by the signal's default action.
    let signals = Signals::listen();
    let hangups = Hangups::listen();
    let service = natsapp_wasm::Service::start(config).await?;
    let reloading = tokio::spawn(hangups.reload(service.reloader()));
    let result = service.run(shutdown_signal(signals)).await.map(|_| ());
    reloading.abort();
    result
}

/// SIGHUP, listened to from the moment this is made (its default action
/// would end the process).
struct Hangups {
    #[cfg(unix)]
    stream: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Hangups {
        Hangups {
            #[cfg(unix)]
            stream: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Reloads the service on each SIGHUP; the reload logs and counts its outcome.
    async fn reload(self, reloader: natsapp_wasm::reload::Reloader) {
        #[cfg(unix)]
        if let Some(mut stream) = self.stream {
            while stream.recv().await.is_some() {
                tracing::info!("SIGHUP received");
                let _ = reloader.reload().await;
            }
        }
        #[cfg(not(unix))]
        let _ = (self, reloader);
    }
}

/// `natsapp-wasm reload`: prints every replica's answer; exit 0 when at
/// least one answered and all applied it.
async fn reload(config: &Config, format: LogFormat) -> ExitCode {
    let answers = match natsapp_wasm::reload::ask_running(config).await {
        Ok(a) => a,
        Err(e) => {
            report_error(format, &e);
            return ExitCode::from(if e.is_configuration() { 2 } else { 1 });
        }
    };
    if answers.is_empty() {
        report(
            format,
            &format!(
                "no running replica of service {:?} answered on {}.reload within {:?}",
                config.service.name,
                config.service.name,
                natsapp_wasm::reload::FIRST_ANSWER_WAIT
            ),
        );
        return ExitCode::from(1);
    }
    for a in &answers {
        match (&a.summary, &a.error) {
            (Some(summary), _) if a.applied => {
                println!("{} {}: applied: {summary}", a.service, a.id)
            }
            (_, error) => println!(
                "{} {}: refused: {}",
                a.service,
                a.id,
                error.as_deref().unwrap_or("no reason given")
            ),
        }
    }
    if answers.iter().all(|a| a.applied) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The error that ends the process, with its causes: `error: …` on
/// stderr, or a JSON event.
fn report_error(format: LogFormat, e: &(dyn std::error::Error + 'static)) {
    report(format, &ErrorChain(e));
}

/// What ends the process: `error: …` on stderr, or a JSON event.
fn report(format: LogFormat, what: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => eprintln!("error: {what}"),
        LogFormat::Json => tracing::error!("{what}"),
    }
}

/// SIGINT and SIGTERM, listened to from the moment this is made.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                streams: signal(SignalKind::interrupt())
                    .ok()
                    .zip(signal(SignalKind::terminate()).ok()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGINT or SIGTERM and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            return tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second one during the
/// graceful stop ends the process at once (exit 130); messages still in
/// flight are then redelivered by the server after their ack_wait.
async fn shutdown_signal(mut signals: Signals) {
    let first = signals.next().await;
    tracing::info!("{first} received");
    tokio::spawn(async move {
        let second = signals.next().await;
        eprintln!("{second} received again: exiting now; messages in flight are redelivered after their ack_wait");
        std::process::exit(130);
    });
}
