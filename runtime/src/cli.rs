//! Command line: `natsapp-wasm run FILE` and `natsapp-wasm check FILE`.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.

use clap::{Parser, Subcommand};
use natsapp_wasm::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs NATS JetStream message handlers compiled as sandboxed WASI components.
#[derive(Parser)]
#[command(name = "natsapp-wasm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT or SIGTERM, then stop gracefully.
    Run {
        /// The service.toml file.
        file: PathBuf,
    },
    /// Validate the file and every component without connecting; print the plan.
    Check {
        /// The service.toml file.
        file: PathBuf,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.command {
        Command::Run { file } | Command::Check { file } => file,
    };
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            natsapp_wasm::telemetry::init(false);
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    natsapp_wasm::telemetry::init(config.service.debug);
    let result = match cli.command {
        Command::Check { .. } => natsapp_wasm::check(&config).map(|plan| print!("{plan}")),
        Command::Run { .. } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(async {
                natsapp_wasm::run(config, shutdown_signal())
                    .await
                    .map(|_| ())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
