//! One `natsapp-wasm run service.toml` process: started with its log in a
//! file, stopped with SIGTERM (graceful, must exit 0) or SIGKILL, and how
//! many orders its handler reported processing, and what its log says
//! about deliveries made twice at once and pulls it got going again.

use anyhow::{bail, Context as _};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// The line the order processor logs after publishing an order's outputs.
const PROCESSED_LINE: &str = "processed order ";
/// The runtime's warning when the server delivers a message again while
/// its handler still runs.
const TWICE_AT_ONCE_LINE: &str = "delivered again while its handler still runs";
/// The runtime's line when a message running there came as a first
/// delivery again: the server lost its record of the earlier one (a
/// SIGKILLed server restarting from its store), not a late in-progress.
const FORGOTTEN_WHILE_RUNNING_LINE: &str = "delivered anew while its handler still runs";
/// The runtime's line when a message running there came again soon after
/// its connection was made anew (the server restarted, perhaps from an
/// older state of the durable, or the outage outlasted ack_wait): an
/// expected redelivery.
const AGAIN_AFTER_LOST_CONNECTION_LINE: &str =
    "delivered again after the connection was lost or the server restarted, while its handler still runs";
/// The runtime's warnings when it gives up a pull request that brought
/// nothing although it should have (a stall), or heard nothing from.
const PULL_RECOVERY_LINES: [&str; 2] = ["the pull stalled", "no message, status or heartbeat"];
/// The runtime's log line once it pulls (components loaded, durable ready).
const RUNNING_LINE: &str = " running ";

/// A running natsapp-wasm process.
pub struct RuntimeProcess {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

/// How a stopped process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// SIGKILL ended it.
    Killed,
    /// Another signal ended it.
    Signal(i32),
}

impl Exit {
    fn from_status(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(libc::SIGKILL)) => Exit::Killed,
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Signal(0),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "{c}"),
            Exit::Killed => f.write_str("killed"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// The signal a process was stopped with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a graceful stop, which must exit 0.
    Term,
    /// SIGKILL.
    Kill,
}

impl RuntimeProcess {
    /// Starts `bin run service` with stderr (the log) in `log`, free of the
    /// caller's NATS_DEBUG and RUST_LOG (NATSAPP_CHAOS_RUST_LOG, when set,
    /// becomes its RUST_LOG); `servers`, when given, becomes NATS_SERVERS.
    pub fn spawn(
        name: &str,
        bin: &Path,
        service: &Path,
        log: PathBuf,
        servers: Option<&str>,
    ) -> anyhow::Result<RuntimeProcess> {
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("run")
            .arg(service)
            .env_remove("NATS_SERVERS")
            .env_remove("NATS_DEBUG")
            .env_remove("RUST_LOG")
            .env_remove("GRACEFUL_SHUTDOWN_TIMEOUT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        if let Some(filter) = std::env::var_os("NATSAPP_CHAOS_RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        if let Some(servers) = servers {
            cmd.env("NATS_SERVERS", servers);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} run {}", bin.display(), service.display()))?;
        Ok(RuntimeProcess {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Its name in the report (`r0`, `r1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails with the end of the log when the process has already exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "natsapp-wasm {} exited early ({}); end of its log:\n{}",
                self.name,
                Exit::from_status(status),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Whether the runtime says it is running (pulling messages).
    pub fn is_running(&self) -> anyhow::Result<bool> {
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        Ok(text.lines().any(|l| l.contains(RUNNING_LINE)))
    }

    /// Sends `stop` and waits up to `within` for the process to exit.
    /// A process that ignores SIGTERM for that long is killed, and that is
    /// an error.
    pub async fn stop(&mut self, stop: Stop, within: Duration) -> anyhow::Result<Exit> {
        if self.child.try_wait()?.is_none() {
            let pid = self.child.id().context("no pid for a running process")?;
            let signal = match stop {
                Stop::Term => libc::SIGTERM,
                Stop::Kill => libc::SIGKILL,
            };
            // SAFETY: kill(2) with the pid of our own child that has not been reaped.
            if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| {
                    format!("cannot signal natsapp-wasm {} (pid {pid})", self.name)
                });
            }
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(Exit::from_status(status?)),
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "natsapp-wasm {} did not exit within {within:?} of {stop:?}; killed it. End of its log:\n{}",
                    self.name,
                    self.log_tail()
                )
            }
        }
    }

    /// How many orders its handler logged as processed (outputs published;
    /// the ack may still have failed).
    pub fn processed(&self) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        Ok(text.lines().filter(|l| l.contains(PROCESSED_LINE)).count())
    }

    /// How often its log says a message was delivered again while its
    /// handler still ran.
    pub fn delivered_twice_at_once(&self) -> anyhow::Result<usize> {
        self.log_lines(&[TWICE_AT_ONCE_LINE])
    }

    /// How often its log says a message running there came as a first
    /// delivery again (the server had lost its record of the delivery).
    pub fn delivered_anew_while_running(&self) -> anyhow::Result<usize> {
        self.log_lines(&[FORGOTTEN_WHILE_RUNNING_LINE])
    }

    /// How often its log says a message running there came again soon
    /// after its connection was made anew.
    pub fn delivered_again_after_lost_connection(&self) -> anyhow::Result<usize> {
        self.log_lines(&[AGAIN_AFTER_LOST_CONNECTION_LINE])
    }

    /// How often its log says it recovered a stalled or silent pull.
    pub fn pull_recoveries(&self) -> anyhow::Result<usize> {
        self.log_lines(&PULL_RECOVERY_LINES)
    }

    /// Lines of its log holding any of `markers`.
    fn log_lines(&self, markers: &[&str]) -> anyhow::Result<usize> {
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        Ok(text
            .lines()
            .filter(|l| markers.iter().any(|m| l.contains(m)))
            .count())
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}
