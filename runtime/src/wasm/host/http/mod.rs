//! Host of `wasi:http/outgoing-handler`: a guest's outbound HTTP requests,
//! sent by the runtime only to the origins the subscriber is granted
//! (`http = [...]`). Every guest links it — toolchains import wasi:http
//! whether or not a handler uses it — and a request without a grant fails
//! inside the guest with an error naming the rule; nothing leaves the
//! process.
//!
//! Before a request is sent: its origin must match a grant; the tenant's
//! `http_rate` and `http_concurrency` must allow it; its host is resolved
//! and an internal address is refused unless the grant names it (an IP
//! literal, or `internal = true`). The connection goes to the addresses
//! checked (`send`). Redirects are not followed by the host: a guest client
//! that follows one sends a new request, checked the same way. Timeouts
//! are the guest's, capped at `limits.http_timeout`; a response body past
//! `limits.http_response` is cut.

pub mod addresses;
mod send;

use super::HostState;
use crate::config::origin::{Host, Scheme};
use crate::config::{Origin, SubscriberConfig};
use crate::counters::{HttpOutcome, SubscriberStats};
use crate::wasm::rate::RateLimit;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// A tenant's outbound HTTP quotas, shared by its subscribers.
#[derive(Debug)]
pub struct HttpQuota {
    /// Requests per second (`quotas.http_rate`).
    pub rate: Option<RateLimit>,
    /// Requests in flight, body included (`quotas.http_concurrency`).
    pub concurrency: Option<Arc<Semaphore>>,
    /// The concurrency quota, for its error message.
    pub concurrency_limit: usize,
}

/// One subscriber's outbound HTTP: its grants, limits, quotas and counters.
pub struct OutboundHttp {
    subscriber: Arc<str>,
    /// Masks the subscriber's secrets in what is logged of a request.
    secrets: Arc<crate::config::secrets::Secrets>,
    grants: Vec<Origin>,
    timeout: Duration,
    max_response: u64,
    quota: Option<Arc<HttpQuota>>,
    stats: Arc<SubscriberStats>,
}

impl OutboundHttp {
    /// The outbound HTTP of `sub`, counted in `stats`, within its tenant's
    /// `quota`, masking its `secrets` in what it logs.
    pub fn new(
        sub: &SubscriberConfig,
        quota: Option<Arc<HttpQuota>>,
        stats: Arc<SubscriberStats>,
        secrets: Arc<crate::config::secrets::Secrets>,
    ) -> Self {
        OutboundHttp {
            subscriber: sub.name.as_str().into(),
            secrets,
            grants: sub.http.clone(),
            timeout: sub.http_timeout,
            max_response: sub.http_response,
            quota,
            stats,
        }
    }

    /// The origins granted.
    pub fn grants(&self) -> &[Origin] {
        &self.grants
    }

    /// A refusal the guest sees, naming the rule. Logged too, as some
    /// guest HTTP clients (JavaScript's `fetch`) show every failure alike;
    /// quota refusals only at debug level, as a flood would fill the log.
    fn denied(&self, why: String) -> Error {
        self.stats.http(HttpOutcome::Denied);
        let why = self.secrets.mask(&why);
        if why.starts_with("quota: ") {
            tracing::debug!(subscriber = %self.subscriber, "HTTP request denied: {why}");
        } else {
            tracing::warn!(subscriber = %self.subscriber, "HTTP request denied: {why}");
        }
        Error::InternalError(Some(format!("denied: {why}")))
    }

    /// Checks `request` and sends it.
    async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<send::Sent, Error> {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            other => {
                return Err(self.denied(format!(
                    "scheme {:?} is not allowed: http and https only",
                    other.unwrap_or("")
                )))
            }
        };
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let origin = match port == scheme.default_port() {
            true => format!("{}://{host}", scheme.as_str()),
            false => format!("{}://{host}:{port}", scheme.as_str()),
        };
        let Some(grant) = self.grants.iter().find(|g| g.matches(scheme, &host, port)) else {
            let granted: Vec<String> = self
                .grants
                .iter()
                .map(|g| format!("{:?}", g.to_string()))
                .collect();
            return Err(self.denied(format!(
                "subscriber {:?} is not granted {origin} (http = [{}] in service.toml)",
                &*self.subscriber,
                granted.join(", ")
            )));
        };
        let permit = match &self.quota {
            None => None,
            Some(q) => {
                if let Some(rate) = &q.rate {
                    if !rate.take(1) {
                        return Err(self.denied(format!(
                            "quota: subscriber {:?}'s tenant has used its http_rate of {}/s",
                            &*self.subscriber,
                            rate.per_second()
                        )));
                    }
                }
                match &q.concurrency {
                    None => None,
                    Some(sem) => Some(sem.clone().try_acquire_owned().map_err(|_| {
                        self.denied(format!(
                            "quota: subscriber {:?}'s tenant has {} HTTP requests in flight (http_concurrency)",
                            &*self.subscriber, q.concurrency_limit
                        ))
                    })?),
                }
            }
        };
        let cap = |d: Option<Duration>| d.map_or(self.timeout, |d| d.min(self.timeout));
        let timeouts = send::Timeouts {
            connect: cap(options.and_then(|o| o.connect_timeout)),
            first_byte: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let lookup = tokio::net::lookup_host((bare.as_str(), port));
                match tokio::time::timeout(timeouts.connect, lookup).await {
                    Err(_) => return self.finished(Err(Error::DnsTimeout)),
                    Ok(Err(e)) => {
                        return self.finished(Err(Error::DnsError {
                            rcode: Some(e.to_string()),
                            info_code: None,
                        }))
                    }
                    Ok(Ok(found)) => found.collect(),
                }
            }
        };
        if addrs.is_empty() {
            return self.finished(Err(Error::DestinationNotFound));
        }
        let named = matches!(grant.host, Host::Ip(_)) || grant.internal;
        if let Some(inside) = addrs.iter().find(|a| addresses::is_internal(a.ip())) {
            if !named {
                return Err(self.denied(format!(
                    "{host} resolves to {}, an internal address (loopback, private, link-local or metadata); a grant reaches one only as an IP literal or with internal = true",
                    inside.ip()
                )));
            }
        }
        let stats = self.stats.clone();
        let limit = send::BodyLimit {
            max: self.max_response,
            failed: Box::new(move |outcome| stats.http(outcome)),
            permit,
        };
        let head = request.method() == http::Method::HEAD;
        let sent = send::send(
            request,
            &addrs,
            &bare,
            scheme == Scheme::Https,
            timeouts,
            limit,
            head,
        )
        .await;
        self.finished(sent)
    }

    /// Counts how a request that was not refused ended.
    fn finished<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        let outcome = match &result {
            Ok(_) => HttpOutcome::Ok,
            Err(Error::HttpResponseBodySize(_)) => return result,
            Err(
                Error::ConnectionTimeout
                | Error::ConnectionReadTimeout
                | Error::HttpResponseTimeout
                | Error::DnsTimeout,
            ) => HttpOutcome::Timeout,
            Err(_) => HttpOutcome::Failed,
        };
        self.stats.http(outcome);
        result
    }
}

impl std::fmt::Debug for OutboundHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundHttp")
            .field("subscriber", &self.subscriber)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// One store's hooks into wasi:http: its subscriber's [`OutboundHttp`].
pub struct HttpHooks(pub Arc<OutboundHttp>);

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<send::Sent>> + Send> {
        Box::new(self.0.clone().send(request, options))
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Links `wasi:http` (types and outgoing-handler) over each store's hooks.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
