//! Step 5 for endpoints: core NATS requests handled by a component. A
//! request is read off the endpoint's queue subscription and admitted — to
//! a handler slot, or to one of `max_waiting` places until a slot frees, or
//! else answered 503 at once; its guest runs as a subscriber's does (the
//! same limits, grants, quotas and CPU share) and answers it, or the
//! runtime answers with a micro-service error for what came of it
//! (`answer`). Nothing is acknowledged: a core request is delivered once.

use crate::config::EndpointConfig;
use crate::error::ErrorChain;
use crate::message::answer::{self, ErrorAnswer};
use crate::message::{InFlight, Outcome};
use crate::nats::micro::{error_headers, EndpointStats, MicroEndpoint};
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use async_nats::Subscriber;
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stopping endpoint takes in requests already on their way.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One endpoint on its connection.
pub struct Endpoint {
    /// Its configuration.
    pub config: EndpointConfig,
    /// Its compiled handler.
    pub handler: Handler,
    /// Capabilities and NATS handles shared with the guest's stores.
    pub host: Arc<SubscriberHost>,
    /// How the micro-service lists and counts it.
    pub micro: Arc<MicroEndpoint>,
    /// Its tenant's `concurrency` quota, shared with the tenant's other
    /// handlers.
    pub tenant_slots: Option<Arc<Semaphore>>,
    /// The connection it serves on.
    pub client: async_nats::Client,
    /// Cancelled when it must stop serving.
    pub stop: CancellationToken,
    /// Cancelled once the server has its subscription, or once it gave up
    /// serving: a predecessor leaves the queue group then, not before.
    pub joined: CancellationToken,
    /// Its requests being handled or waiting.
    pub tasks: TaskTracker,
    /// Its handler slots.
    slots: Arc<Semaphore>,
    /// Its handler slots and waiting places: a request finding none left is
    /// answered 503.
    places: Arc<Places>,
    /// Its replacement on the same connection, subject and queue group,
    /// which serves on from its subscription once it stops.
    successor: Mutex<Option<oneshot::Sender<Subscriber>>>,
    /// Its predecessor's subscription, when it serves on from it.
    inherited: Mutex<Option<oneshot::Receiver<Subscriber>>>,
    /// Requests received, numbering each one's outputs.
    received: AtomicU64,
    name: Arc<str>,
}

impl Endpoint {
    /// An endpoint of `config` running `handler` on `client`, counting in
    /// `stats` (its predecessor's, when it replaces one).
    pub fn new(
        config: EndpointConfig,
        stats: Arc<EndpointStats>,
        handler: Handler,
        host: Arc<SubscriberHost>,
        tenant_slots: Option<Arc<Semaphore>>,
        client: async_nats::Client,
        stop: CancellationToken,
    ) -> Arc<Endpoint> {
        let concurrency = config.handler.concurrency;
        let micro = Arc::new(MicroEndpoint {
            name: config.name.clone(),
            subject: config.subject.to_string(),
            queue_group: config.queue_group.clone(),
            stats,
        });
        Arc::new(Endpoint {
            name: config.name.as_str().into(),
            slots: Arc::new(Semaphore::new(concurrency)),
            places: Arc::new(Places {
                taken: AtomicUsize::new(0),
                limit: concurrency.saturating_add(config.max_waiting),
            }),
            config,
            handler,
            host,
            micro,
            tenant_slots,
            client,
            stop,
            joined: CancellationToken::new(),
            successor: Mutex::default(),
            inherited: Mutex::default(),
            tasks: TaskTracker::new(),
            received: AtomicU64::new(0),
        })
    }

    /// Has `successor` serve on from `predecessor`'s subscription once
    /// `predecessor` stops, rather than subscribe: the queue group never
    /// changes, so no request finds it empty and none is sent to a
    /// subscription on its way out. Set before `successor` serves.
    pub fn hand_over(predecessor: &Endpoint, successor: &Endpoint) {
        let (pass, take) = oneshot::channel();
        *predecessor.successor.lock().expect("successor lock") = Some(pass);
        *successor.inherited.lock().expect("inherited lock") = Some(take);
    }

    /// Whether a successor serves on from its subscription.
    pub fn hands_over(&self) -> bool {
        self.successor.lock().expect("successor lock").is_some()
    }

    /// Serves requests until stopped, `tracker` waiting for their handlers
    /// too, which are cut short (answered 503) once `abandon` is cancelled; then
    /// takes in the requests already on their way to this process and
    /// returns, their handlers still running (see [`finished`](Self::finished)).
    pub async fn serve(
        self: Arc<Self>,
        tracker: TaskTracker,
        abandon: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let _gave_up = self.joined.clone().drop_guard();
        // The service waits for this endpoint's requests all at once, rather
        // than for each request as well.
        let tasks = self.tasks.clone();
        tracker.spawn(async move { tasks.wait().await });
        // Shared by the requests' tasks: cloning a token takes a lock.
        let abandon = Arc::new(abandon);
        let served = self.clone().serve_requests(&abandon).await;
        self.tasks.close();
        served
    }

    async fn serve_requests(
        self: Arc<Self>,
        abandon: &Arc<CancellationToken>,
    ) -> Result<(), async_nats::SubscribeError> {
        let (subject, group) = (&self.config.subject, &self.config.queue_group);
        let inherited = self.inherited.lock().expect("inherited lock").take();
        let inherited = match inherited {
            Some(take) => take.await.ok(),
            None => None,
        };
        let mut requests = match inherited {
            Some(requests) => requests,
            None => self.subscribe().await?,
        };
        self.joined.cancel();
        tracing::info!(endpoint = %self.name, %subject, queue_group = %group, "serving");
        // Waited on across requests: a new wait for each would take the
        // token's lock twice per request.
        let stopped = self.stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let request = tokio::select! {
                biased;
                () = &mut stopped => break,
                r = requests.next() => match r {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            self.admit(request, abandon).await;
        }
        let successor = self.successor.lock().expect("successor lock").take();
        if let Some(pass) = successor {
            match pass.send(requests) {
                Ok(()) => return Ok(()),
                // The successor is gone: this one leaves the group.
                Err(back) => requests = back,
            }
        }
        // The server sends no more once it has the unsubscription; what it
        // sent before is handled, not dropped (a replacement or another
        // replica serves the rest).
        if requests.drain().await.is_ok() {
            let until = tokio::time::Instant::now() + DRAIN_WAIT;
            while let Ok(Some(request)) = tokio::time::timeout_at(until, requests.next()).await {
                self.admit(request, abandon).await;
            }
        }
        Ok(())
    }

    /// Its queue subscription, once the server has it.
    async fn subscribe(&self) -> Result<Subscriber, async_nats::SubscribeError> {
        let (subject, group) = (&self.config.subject, &self.config.queue_group);
        let requests = match self
            .client
            .queue_subscribe(subject.to_string(), group.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(endpoint = %self.name, "cannot subscribe to {subject} in queue group {group}: {}: this endpoint does not serve", ErrorChain(&e));
                return Err(e);
            }
        };
        if !crate::nats::connection::round_trip(&self.client).await {
            tracing::debug!(endpoint = %self.name, "no round trip to the server after subscribing: a predecessor may leave its queue group before the server has this subscription");
        }
        Ok(requests)
    }

    /// Resolves once the requests it took are answered (after [`serve`](Self::serve)).
    pub async fn finished(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Starts handling `request` when a slot or waiting place is left, else
    /// answers it 503.
    async fn admit(
        self: &Arc<Self>,
        mut request: async_nats::Message,
        abandon: &Arc<CancellationToken>,
    ) {
        let received = Instant::now();
        if request.reply.as_ref().is_some_and(|r| !answerable(r)) {
            tracing::debug!(endpoint = %self.name, "a request's reply subject is in the system's namespace or has a wildcard: not answered");
            request.reply = None;
        }
        let Some(place) = Places::take(&self.places) else {
            let concurrency = self.config.handler.concurrency;
            let refused = answer::overloaded(concurrency, self.config.max_waiting);
            self.send_error(request.reply.as_ref(), &refused).await;
            self.micro
                .stats
                .record(received.elapsed(), Some(refused.to_string()));
            return;
        };
        let sequence = self.received.fetch_add(1, Relaxed) + 1;
        let msg = Arc::new(InFlight::request(request, &self.name, sequence));
        let (me, abandon) = (self.clone(), abandon.clone());
        let handled = async move {
            // Boxed: the handler's state is large, and a spawned future is
            // moved into its task.
            let handled = Box::pin(me.clone().handle(msg.clone(), received, place));
            // Biased: a handler that finishes in its first poll never
            // waits on the token, which would take its lock twice.
            tokio::select! {
                biased;
                () = handled => {}
                // Past the graceful timeout the handler is dropped; its
                // requester learns at once rather than at its timeout.
                // Boxed too: a rare path, kept out of every request's task.
                () = abandon.cancelled() => Box::pin(me.abandoned(&msg, received)).await,
            }
        };
        tokio::spawn(self.tasks.track_future(handled));
    }

    /// Answers 503 for a request whose handler was dropped at shutdown.
    async fn abandoned(&self, msg: &InFlight, received: Instant) {
        let request = msg.request.as_ref().expect("a request");
        let stopping = answer::stopping();
        if request.claim_answer() {
            self.send_error(request.reply.as_ref(), &stopping).await;
        }
        self.micro
            .stats
            .record(received.elapsed(), Some(stopping.to_string()));
    }

    async fn handle(self: Arc<Self>, msg: Arc<InFlight>, received: Instant, _place: Place) {
        let _slot = self.slots.acquire().await.expect("never closed");
        let _tenant_slot = match &self.tenant_slots {
            Some(s) => Some(s.acquire().await.expect("never closed")),
            None => None,
        };
        let trace =
            (self.host.tracer.as_ref()).map(|t| (t, msg.trace.get_or_init(|| t.process(&msg))));
        let counted = &self.host.settler.stats;
        counted.started();
        let started = Instant::now();
        let outcome = self.handler.invoke(msg.clone()).await;
        counted.finished(started.elapsed(), &outcome);
        counted.request_done();
        let request = msg.request.as_ref().expect("a request");
        // A request that wants no answer and was handled is no error.
        let error = match (&outcome, &request.reply) {
            (Outcome::Ok, None) => None,
            _ => answer::after(&outcome, request.answered()),
        };
        log(&self.name, &outcome);
        if let Some(e) = &error {
            if request.reply.is_some() && request.claim_answer() {
                self.send_error(request.reply.as_ref(), e).await;
            }
        }
        if let Some((tracer, trace)) = trace {
            let code = error.as_ref().map(|e| e.code.to_string());
            let outcome = match (&error, &request.reply) {
                (Some(_), _) => "error_answer",
                (None, Some(_)) => "answered",
                (None, None) => "handled",
            };
            trace.finish(tracer, outcome, code.as_deref());
        }
        self.micro
            .stats
            .record(received.elapsed(), error.map(|e| e.to_string()));
    }

    /// Sends `error` to `reply`, when the requester wants an answer.
    async fn send_error(&self, reply: Option<&async_nats::Subject>, error: &ErrorAnswer) {
        let Some(reply) = reply else { return };
        let headers = error_headers(error.code, &error.description);
        if let Err(e) = self
            .client
            .publish_with_headers(reply.clone(), headers, bytes::Bytes::new())
            .await
        {
            tracing::debug!(endpoint = %self.name, "could not answer a request: {}", ErrorChain(&e));
        }
    }
}

/// An endpoint's handler slots and waiting places, counted: only ever
/// tried, never waited for, so a counter does what a semaphore would
/// without its lock on every release.
struct Places {
    taken: AtomicUsize,
    limit: usize,
}

/// A request's place, given back when dropped.
struct Place(Arc<Places>);

impl Places {
    /// A place, when one is left.
    fn take(places: &Arc<Places>) -> Option<Place> {
        if places.taken.fetch_add(1, Relaxed) >= places.limit {
            places.taken.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Place(places.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Relaxed);
    }
}

/// Whether a reply subject is an address an answer may go to: never the
/// system's namespace ($JS.API…, $SRV…), nor a wildcard a requester chose
/// to have the service publish to many subjects with its credentials. A
/// request with any other is handled as one that wants no answer.
fn answerable(reply: &str) -> bool {
    !reply.starts_with('$') && !reply.split('.').any(|t| t == "*" || t == ">")
}

fn log(endpoint: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Ok => {}
        Outcome::Reject(reason) => {
            tracing::info!(%endpoint, %reason, "handler rejected the request: answered 400")
        }
        Outcome::Retry { reason, .. } => {
            tracing::info!(%endpoint, %reason, "handler asked for a retry: answered 503")
        }
        Outcome::Failed { cause, detail } => {
            tracing::warn!(%endpoint, cause = cause.as_str(), "handler failed: {detail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::answerable;

    #[test]
    fn a_reply_subject_is_answered_unless_system_or_wildcard() {
        assert!(answerable("_INBOX.abc.def"));
        assert!(answerable("replies.order-7"));
        assert!(!answerable("$JS.API.STREAM.DELETE.ORDERS"));
        assert!(!answerable("orders.>"));
        assert!(!answerable("orders.*.paid"));
    }
}
