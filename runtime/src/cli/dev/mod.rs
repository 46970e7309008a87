//! `natsapp-wasm dev [DIR]`: a handler project made by `natsapp-wasm new`,
//! from sources to a running service in one command — a local nats-server
//! when the configured one is not reachable (`server`), the project's own
//! build, the service, and a rebuild and reload whenever a source changes
//! (`watch`). A failed build keeps the previous one running.

mod server;
mod watch;

use natsapp_wasm::config::Config;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::observability::logs::LogFormat;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DevArgs {
    /// The project folder: its service.toml and its build command
    /// (Cargo.toml, or build.sh).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// How often the sources are checked for changes.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    poll: Duration,
}

/// How the project builds its component.
#[derive(Debug, Clone)]
struct Build {
    dir: PathBuf,
    program: String,
    args: Vec<String>,
}

impl Build {
    /// The build command of the project in `dir`: Cargo for a Rust project,
    /// its build.sh otherwise.
    fn detect(dir: &Path) -> Result<Build, String> {
        let (program, args): (&str, &[&str]) = if dir.join("Cargo.toml").exists() {
            (
                "cargo",
                &["build", "--target", "wasm32-wasip2", "--release"],
            )
        } else if dir.join("build.sh").exists() {
            ("./build.sh", &[])
        } else {
            return Err(format!(
                "{}: no Cargo.toml or build.sh to build the handler with (a project made by `natsapp-wasm new` has one)",
                dir.display()
            ));
        };
        Ok(Build {
            dir: dir.to_path_buf(),
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }

    fn describe(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the build, its output going to this process's; true when it succeeded.
    async fn run(&self) -> bool {
        tracing::info!("dev: building ({})", self.describe());
        let started = Instant::now();
        let status = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .status()
            .await;
        match status {
            Ok(s) if s.success() => {
                tracing::info!("dev: built in {:.1?}", started.elapsed());
                true
            }
            Ok(s) => {
                tracing::error!("dev: the build failed ({s})");
                false
            }
            Err(e) => {
                tracing::error!("dev: cannot run {}: {}", self.describe(), ErrorChain(&e));
                false
            }
        }
    }
}

/// Runs `natsapp-wasm dev`.
pub fn run(args: DevArgs, format: LogFormat) -> ExitCode {
    natsapp_wasm::observability::logs::init_with("info", format);
    if args.poll.is_zero() {
        eprintln!("error: --poll must be more than zero");
        return ExitCode::from(2);
    }
    let dir = match std::path::absolute(&args.dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {}", args.dir.display(), ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    let file = dir.join("service.toml");
    if !file.exists() {
        eprintln!(
            "error: no service.toml in {}: run `natsapp-wasm dev` in a project made by `natsapp-wasm new`",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let build = match Build::detect(&dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {}", ErrorChain(&e));
            return ExitCode::from(1);
        }
    };
    runtime.block_on(develop(&dir, &file, build, args.poll))
}

async fn develop(dir: &Path, file: &Path, build: Build, poll: Duration) -> ExitCode {
    let signals = super::Signals::listen();
    if !build.run().await {
        eprintln!("error: the first build failed; fix it and run `natsapp-wasm dev` again");
        return ExitCode::from(1);
    }
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    let _server = match server::LocalServer::ensure(&config.nats.servers, dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(1);
        }
    };
    let service = match natsapp_wasm::Service::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(e.exit_code());
        }
    };
    tracing::info!(
        "dev: watching {} (every {poll:?}); Ctrl-C stops",
        dir.display()
    );
    let watching = tokio::spawn(watch::rebuild_on_change(
        dir.to_path_buf(),
        build,
        service.reloader(),
        poll,
    ));
    let result = service.run(super::shutdown_signal(signals)).await;
    watching.abort();
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
