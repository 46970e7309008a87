//! The connection of the verbs that work on NATS without running a
//! service (`push`, `deploy`, `rollback`, `status`): flags named as the `nats` CLI names them, or a
//! service file's identity (`--service FILE [--tenant T]`).

use natsapp_wasm::config::{Auth, Config, ConfigError, NatsConfig};
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::nats::connect::{self, ConnectError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where to connect, and as whom.
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// NATS server URLs, comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// A credentials file.
    #[arg(long)]
    creds: Option<PathBuf>,
    /// A user (with --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// The user's password.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// A token.
    #[arg(long)]
    token: Option<String>,
    /// Connect as this service file's [nats] does (or as its tenant's, with --tenant).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["creds", "user", "token"])]
    service: Option<PathBuf>,
    /// With --service: connect as this tenant of the file.
    #[arg(long, requires = "service")]
    tenant: Option<String>,
}

/// Why a verb could not connect.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The service file named by `--service` is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--tenant` names no tenant of the file.
    #[error("{file} has no tenant {tenant:?}")]
    NoTenant {
        /// The file.
        file: String,
        /// The tenant.
        tenant: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl RemoteError {
    /// True when what was given, not the server, is at fault.
    pub fn is_input(&self) -> bool {
        match self {
            RemoteError::Config(_) | RemoteError::NoTenant { .. } => true,
            RemoteError::Connect(e) => matches!(
                e,
                ConnectError::BadUrl { .. } | ConnectError::Credentials { .. }
            ),
        }
    }
}

impl ConnectionArgs {
    /// The connection settings the flags describe.
    pub fn nats(&self) -> Result<NatsConfig, RemoteError> {
        if let Some(file) = &self.service {
            let config = Config::load(file)?;
            return match &self.tenant {
                None => Ok(config.nats),
                Some(name) => config.tenant(name).map(|t| t.nats.clone()).ok_or_else(|| {
                    RemoteError::NoTenant {
                        file: file.display().to_string(),
                        tenant: name.clone(),
                    }
                }),
            };
        }
        let auth = match (&self.creds, &self.user, &self.password, &self.token) {
            (Some(creds), ..) => Auth::Credentials(creds.clone()),
            (_, Some(user), Some(password), _) => {
                Auth::UserPassword(user.clone(), password.clone())
            }
            (.., Some(token)) => Auth::Token(token.clone()),
            _ => Auth::None,
        };
        Ok(NatsConfig::to(
            self.server
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
            auth,
        ))
    }

    /// Connects, naming the connection `what`; or prints why not and
    /// gives the exit code (2 when what was given is wrong, 1 otherwise).
    pub async fn client(&self, what: &str) -> Result<async_nats::Client, ExitCode> {
        let connected = match self.nats() {
            Ok(nats) => connect(&nats, what).await,
            Err(e) => Err(e),
        };
        connected.map_err(|e| {
            eprintln!("error: {}", ErrorChain(&e));
            ExitCode::from(if e.is_input() { 2 } else { 1 })
        })
    }
}

/// A runtime for a command's NATS calls; or prints why not and gives exit code 1.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

/// Connects with `nats`, naming the connection `what`.
pub async fn connect(nats: &NatsConfig, what: &str) -> Result<async_nats::Client, RemoteError> {
    let (ended, _ends) = tokio::sync::mpsc::unbounded_channel();
    Ok(connect::connect(what, nats, ended).await?.client)
}
