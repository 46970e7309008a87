//! A TCP proxy in front of a nats-server that misbehaves on cue, its
//! client's connection staying up:
//! - it can swallow pull requests: the server then holds messages for the
//!   durable and delivers none (what a stalled pull looks like from both
//!   sides). Swallowed requests can be left silent, or answered as a server
//!   with nothing to deliver would answer them: idle heartbeats, then a 408
//!   at their expiry;
//! - it can go deaf right after passing a publish to a subject: the server
//!   has the message, the client never hears the PubAck or anything else —
//!   a client caught between its publish and what it does next.
//!
//! Everything else passes through untouched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The subject prefix of a pull request (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`).
const PULL_REQUEST: &str = "$JS.API.CONSUMER.MSG.NEXT.";
/// How often swallowed requests that are answered get a heartbeat.
const FAKE_HEARTBEAT: Duration = Duration::from_millis(200);

/// What the proxy does with pull requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swallowing {
    /// Passes them to the server.
    Off,
    /// Drops them: the client hears nothing about them.
    Silently,
    /// Drops them and answers as a server with nothing to deliver: idle
    /// heartbeats, and a 408 at their expiry.
    Answering,
}

/// A proxy listening on a loopback port of its own.
pub struct NatsProxy {
    port: u16,
    mode: Arc<AtomicU8>,
    swallowed: Arc<AtomicUsize>,
    deafness: Arc<Deafness>,
    accept: tokio::task::JoinHandle<()>,
}

impl NatsProxy {
    /// Proxies to the server at `upstream` (`nats://host:port`).
    pub async fn start(upstream: &str) -> NatsProxy {
        let upstream = upstream.trim_start_matches("nats://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let mode = Arc::new(AtomicU8::new(Swallowing::Off as u8));
        let swallowed = Arc::new(AtomicUsize::new(0));
        let deafness = Arc::new(Deafness::default());
        let (mode_, swallowed_, deafness_) = (mode.clone(), swallowed.clone(), deafness.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let link = Arc::new(Link {
                    to_client: tokio::sync::Mutex::new(client_write),
                    subscriptions: Mutex::new(HashMap::new()),
                    swallowed_requests: Mutex::new(Vec::new()),
                    mode: mode_.clone(),
                    swallowed: swallowed_.clone(),
                    deafness: deafness_.clone(),
                });
                tokio::spawn(link.clone().to_client(server_read));
                tokio::spawn(link.clone().to_server(client_read, server_write));
                tokio::spawn(link.answer());
            }
        });
        NatsProxy {
            port,
            mode,
            swallowed,
            deafness,
            accept,
        }
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Sets what happens to pull requests from now on.
    pub fn swallow(&self, mode: Swallowing) {
        self.mode.store(mode as u8, Relaxed);
    }

    /// Pull requests swallowed so far.
    pub fn swallowed(&self) -> usize {
        self.swallowed.load(Relaxed)
    }

    /// From the next publish to `subject` on (that one passed to the
    /// server), nothing the server sends reaches a client.
    pub fn deafen_after_publish_to(&self, subject: &str) {
        *self.deafness.after_publish_to.lock().unwrap() = Some(subject.to_string());
    }

    /// Whether that publish has passed and clients hear nothing.
    pub fn deaf(&self) -> bool {
        self.deafness.deaf.load(Relaxed)
    }
}

/// When clients stop hearing the server.
#[derive(Default)]
struct Deafness {
    /// The subject whose next publish turns them deaf.
    after_publish_to: Mutex<Option<String>>,
    deaf: AtomicBool,
}

impl Drop for NatsProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection through the proxy.
struct Link {
    to_client: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The client's subscriptions: subject → sid.
    subscriptions: Mutex<HashMap<String, String>>,
    /// Swallowed requests to answer: the sid of their inbox and when they expire.
    swallowed_requests: Mutex<Vec<(String, String, Instant)>>,
    mode: Arc<AtomicU8>,
    swallowed: Arc<AtomicUsize>,
    deafness: Arc<Deafness>,
}

impl Link {
    fn mode(&self) -> Swallowing {
        match self.mode.load(Relaxed) {
            m if m == Swallowing::Silently as u8 => Swallowing::Silently,
            m if m == Swallowing::Answering as u8 => Swallowing::Answering,
            _ => Swallowing::Off,
        }
    }

    /// Copies the server's commands to the client whole, so an answer
    /// never lands inside one.
    async fn to_client(self: Arc<Self>, mut server: OwnedReadHalf) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some(length) = command_length(&buffer) {
                let command: Vec<u8> = buffer.drain(..length).collect();
                if self.deafness.deaf.load(Relaxed) {
                    continue;
                }
                if self
                    .to_client
                    .lock()
                    .await
                    .write_all(&command)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            match server.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Copies the client's commands to the server, noting its
    /// subscriptions and leaving out its pull requests while swallowing.
    async fn to_server(self: Arc<Self>, mut client: OwnedReadHalf, mut server: OwnedWriteHalf) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some(length) = command_length(&buffer) {
                let command: Vec<u8> = buffer.drain(..length).collect();
                if self.swallows(&command) {
                    continue;
                }
                // Deaf before the publish leaves, so that its PubAck cannot
                // slip through.
                self.deafen_on(&command);
                if server.write_all(&command).await.is_err() {
                    return;
                }
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Notes a SUB; says whether `command` is a pull request to drop (and
    /// notes it for answering).
    fn swallows(&self, command: &[u8]) -> bool {
        let line_end = command
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(command.len());
        let line = String::from_utf8_lossy(&command[..line_end]);
        let words: Vec<&str> = line.split_whitespace().collect();
        let op = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        if op == "SUB" && words.len() >= 3 {
            let sid = words[words.len() - 1].to_string();
            self.subscriptions
                .lock()
                .unwrap()
                .insert(words[1].to_string(), sid);
            return false;
        }
        let mode = self.mode();
        if mode == Swallowing::Off
            || op != "PUB"
            || words.len() != 4
            || !words[1].starts_with(PULL_REQUEST)
        {
            return false;
        }
        self.swallowed.fetch_add(1, Relaxed);
        if mode == Swallowing::Answering {
            let inbox = words[2].to_string();
            let body: serde_json::Value =
                serde_json::from_slice(&command[line_end + 2..command.len() - 2])
                    .unwrap_or_default();
            let expires = Duration::from_nanos(body["expires"].as_u64().unwrap_or(0));
            if let Some(sid) = self.subscriptions.lock().unwrap().get(&inbox).cloned() {
                self.swallowed_requests.lock().unwrap().push((
                    inbox,
                    sid,
                    Instant::now() + expires,
                ));
            }
        }
        true
    }

    /// Turns clients deaf when `command`, about to pass, is the publish
    /// that was to.
    fn deafen_on(&self, command: &[u8]) {
        let mut armed = self.deafness.after_publish_to.lock().unwrap();
        let Some(subject) = armed.as_deref() else {
            return;
        };
        let line_end = command
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(command.len());
        let line = String::from_utf8_lossy(&command[..line_end]);
        let mut words = line.split_whitespace();
        let op = words.next().unwrap_or("").to_ascii_uppercase();
        if matches!(op.as_str(), "PUB" | "HPUB") && words.next() == Some(subject) {
            *armed = None;
            self.deafness.deaf.store(true, Relaxed);
        }
    }

    /// While answering: a heartbeat to every swallowed request, and a 408
    /// to each at its expiry.
    async fn answer(self: Arc<Self>) {
        let mut tick = tokio::time::interval(FAKE_HEARTBEAT);
        loop {
            tick.tick().await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            if self.mode() != Swallowing::Answering {
                self.swallowed_requests.lock().unwrap().clear();
                continue;
            }
            let now = Instant::now();
            let due: Vec<(String, String, bool)> = {
                let mut requests = self.swallowed_requests.lock().unwrap();
                let due = requests
                    .iter()
                    .map(|(inbox, sid, expires)| (inbox.clone(), sid.clone(), now >= *expires))
                    .collect();
                requests.retain(|(_, _, expires)| now < *expires);
                due
            };
            for (inbox, sid, expired) in due {
                let status = if expired {
                    "408 Request Timeout"
                } else {
                    "100 Idle Heartbeat"
                };
                let header = format!("NATS/1.0 {status}\r\n\r\n");
                let command = format!(
                    "HMSG {inbox} {sid} {len} {len}\r\n{header}\r\n",
                    len = header.len()
                );
                if self
                    .to_client
                    .lock()
                    .await
                    .write_all(command.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// The length of the first complete command in `buffer`: its line, and for
/// `PUB`/`HPUB`/`MSG`/`HMSG` the payload whose size ends the line, with its
/// CRLF.
fn command_length(buffer: &[u8]) -> Option<usize> {
    let line_end = buffer.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = std::str::from_utf8(&buffer[..line_end - 2]).ok()?;
    let op = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let length = if matches!(op.as_str(), "PUB" | "HPUB" | "MSG" | "HMSG") {
        let size: usize = line.split_whitespace().last()?.parse().ok()?;
        line_end + size + 2
    } else {
        line_end
    };
    (buffer.len() >= length).then_some(length)
}
