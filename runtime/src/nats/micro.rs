//! The NATS micro-service protocol (ADR-32) on one connection: the
//! service's `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`, by verb, by name and
//! by id, answered from the endpoints registered with it — which come and
//! go with reloads, so INFO lists what serves now. async-nats's own service
//! keeps an endpoint in INFO after it stops and counts only the answers it
//! sends itself; a guest answers with a publish of its own here.

use crate::error::ErrorChain;
use futures::StreamExt;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The header a micro-service error answer carries its description in.
pub const ERROR_HEADER: &str = "Nats-Service-Error";
/// The header a micro-service error answer carries its status code in.
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// One endpoint as the micro-service lists and counts it.
#[derive(Debug)]
pub struct MicroEndpoint {
    /// Its name.
    pub name: String,
    /// The subject it serves.
    pub subject: String,
    /// Its queue group.
    pub queue_group: String,
    /// What it counted: shared with the endpoint that replaces it, so a
    /// reload does not reset `$SRV.STATS`.
    pub stats: Arc<EndpointStats>,
}

/// An endpoint's requests, errors and processing time, as `$SRV.STATS`
/// reports them.
#[derive(Debug, Default)]
pub struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl EndpointStats {
    /// Counts a request handled in `took`, and its error answer when it
    /// got one (`"<code>:<description>"`).
    pub fn record(&self, took: Duration, error: Option<String>) {
        self.requests.fetch_add(1, Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.processing_ns.fetch_add(ns, Relaxed);
        if let Some(e) = error {
            self.errors.fetch_add(1, Relaxed);
            *self.last_error.lock().expect("stats lock") = Some(e);
        }
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Error answers among them.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Their processing time, in total.
    pub fn processing(&self) -> Duration {
        Duration::from_nanos(self.processing_ns.load(Relaxed))
    }
}

/// What the `data` of an endpoint's STATS carries, asked for each time.
pub type StatsData = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A micro-service answering on one connection; stops when dropped.
pub struct MicroService {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    name: String,
    id: String,
    version: String,
    description: String,
    started: String,
    endpoints: Mutex<Vec<Listed>>,
}

/// An endpoint as listed: with what fills its STATS `data`, when anything does.
type Listed = (Arc<MicroEndpoint>, Option<Arc<StatsData>>);

/// Why the micro-service cannot answer.
#[derive(Debug, thiserror::Error)]
#[error("cannot subscribe to {subject}")]
pub struct MicroError {
    subject: String,
    #[source]
    source: async_nats::SubscribeError,
}

#[derive(Serialize)]
struct Ping<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    description: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
    endpoints: Vec<EndpointInfo<'a>>,
}

#[derive(Serialize)]
struct EndpointInfo<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Stats<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    id: &'a str,
    version: &'a str,
    started: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
    endpoints: Vec<EndpointStatsJson<'a>>,
}

#[derive(Serialize)]
struct EndpointStatsJson<'a> {
    name: &'a str,
    subject: &'a str,
    queue_group: &'a str,
    num_requests: u64,
    num_errors: u64,
    /// Nanoseconds.
    processing_time: u64,
    /// Nanoseconds.
    average_processing_time: u64,
    last_error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

impl MicroService {
    /// Answers `$SRV` requests for service `name` on `client`, listing no
    /// endpoint yet.
    pub async fn start(
        client: &async_nats::Client,
        name: &str,
        version: &str,
        description: String,
    ) -> Result<MicroService, MicroError> {
        let id = nuid::next().to_string();
        let mut subscriptions = Vec::new();
        for verb in ["PING", "INFO", "STATS"] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{name}"),
                format!("$SRV.{verb}.{name}.{id}"),
            ] {
                let s = client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|source| MicroError { subject, source })?;
                subscriptions.push(s.map(move |m| (verb, m)));
            }
        }
        let shared = Arc::new(Shared {
            name: name.to_string(),
            id,
            version: version.to_string(),
            description,
            started: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            endpoints: Mutex::default(),
        });
        let task = tokio::spawn(answer(
            client.clone(),
            futures::stream::select_all(subscriptions),
            shared.clone(),
        ));
        Ok(MicroService { shared, task })
    }

    /// Its id, unique to this process.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Lists `endpoint` from now on (replacing one of the same name), its
    /// STATS `data` from `data` when given.
    pub fn add(&self, endpoint: Arc<MicroEndpoint>, data: Option<StatsData>) {
        let mut endpoints = self.shared.endpoints.lock().expect("endpoints lock");
        endpoints.retain(|(e, _)| e.name != endpoint.name);
        endpoints.push((endpoint, data.map(Arc::new)));
    }

    /// Lists `endpoint` no more (a replacement of the same name listed
    /// since stays).
    pub fn remove(&self, endpoint: &Arc<MicroEndpoint>) {
        let mut endpoints = self.shared.endpoints.lock().expect("endpoints lock");
        endpoints.retain(|(e, _)| !Arc::ptr_eq(e, endpoint));
    }

    /// Stops answering: the service leaves the `$SRV` group.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// The names of the endpoints it lists.
    pub fn endpoints(&self) -> Vec<String> {
        let endpoints = self.shared.endpoints.lock().expect("endpoints lock");
        endpoints.iter().map(|(e, _)| e.name.clone()).collect()
    }
}

impl Drop for MicroService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn answer(&self, verb: &str) -> Vec<u8> {
        let endpoints = self.endpoints.lock().expect("endpoints lock").clone();
        let (name, id, version) = (&*self.name, &*self.id, &*self.version);
        let metadata = serde_json::Map::new;
        let body = match verb {
            "PING" => serde_json::to_vec(&Ping {
                kind: "io.nats.micro.v1.ping_response",
                name,
                id,
                version,
                metadata: metadata(),
            }),
            "INFO" => serde_json::to_vec(&Info {
                kind: "io.nats.micro.v1.info_response",
                name,
                id,
                version,
                description: &self.description,
                metadata: metadata(),
                endpoints: endpoints
                    .iter()
                    .map(|(e, _)| EndpointInfo {
                        name: &e.name,
                        subject: &e.subject,
                        queue_group: &e.queue_group,
                        metadata: metadata(),
                    })
                    .collect(),
            }),
            _ => serde_json::to_vec(&Stats {
                kind: "io.nats.micro.v1.stats_response",
                name,
                id,
                version,
                started: &self.started,
                metadata: metadata(),
                endpoints: endpoints
                    .iter()
                    .map(|(e, data)| {
                        let requests = e.stats.requests();
                        let processing = e.stats.processing_ns.load(Relaxed);
                        EndpointStatsJson {
                            name: &e.name,
                            subject: &e.subject,
                            queue_group: &e.queue_group,
                            num_requests: requests,
                            num_errors: e.stats.errors(),
                            processing_time: processing,
                            average_processing_time: processing.checked_div(requests).unwrap_or(0),
                            last_error: e
                                .stats
                                .last_error
                                .lock()
                                .expect("stats lock")
                                .clone()
                                .unwrap_or_default(),
                            data: data.as_ref().map(|d| d()),
                        }
                    })
                    .collect(),
            }),
        };
        body.expect("micro-service answers serialize")
    }
}

async fn answer(
    client: async_nats::Client,
    mut requests: impl futures::Stream<Item = (&'static str, async_nats::Message)> + Unpin,
    shared: Arc<Shared>,
) {
    while let Some((verb, request)) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let body = shared.answer(verb);
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!("could not answer $SRV.{verb}: {}", ErrorChain(&e));
        }
    }
}

/// The headers of an error answer: `code` and `description`.
pub fn error_headers(code: u16, description: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    // A header value holds no line breaks.
    let description: String = description
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(ERROR_HEADER, description.as_str());
    headers.insert(ERROR_CODE_HEADER, code.to_string().as_str());
    headers
}
