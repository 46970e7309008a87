//! Host side of the WIT package `natsapp:handler`: generated bindings, the
//! per-store state, and one module per capability (`types` and
//! `publisher` for NATS, `keyvalue`, `http` for wasi:http). Each capability
//! keeps its own state (the buckets in [`keyvalue::KeyValue`], the grants
//! and limits in [`http::OutboundHttp`]) and links over its own view of a
//! store.

mod answer;
mod headers;
pub mod http;
pub mod keyvalue;
mod later;
mod publisher;
mod types;

pub use publisher::PublishRoutes;

use crate::config::{OutputIds, Subject, SubscriberConfig};
use crate::message::trace::{SendSpan, Tracer};
use crate::message::InFlight;
use crate::nats::wire::Wire;
use crate::settle::Settler;
use crate::wasm::cpu::{CpuGroup, GuestCpu};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

pub(crate) mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "service",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "natsapp:handler/types.message": super::MessageHandle,
        },
    });
}

pub use generated::exports::natsapp::handler::handler::{HandleError, Retry};
pub use generated::natsapp::handler::types::{Delivery, Error as HostError};
pub use generated::{Service, ServicePre};

/// The `message` resource's host value: the delivery lent for one call.
pub struct MessageHandle;

/// What a tenant's guests are metered against, shared by its subscribers.
/// The service's own subscribers have only a group sharing guest CPU.
#[derive(Clone)]
pub struct GuestQuotas {
    /// The guest CPU its subscribers share (`quotas.cpu`; for the service's
    /// own subscribers, every core but one).
    pub shares: Arc<CpuGroup>,
    /// Guest execution (`quotas.cpu`).
    pub cpu: Option<Arc<crate::wasm::cpu::CpuBudget>>,
    /// Guest memory of live instances (`quotas.memory`).
    pub memory: Option<Arc<crate::wasm::memory::MemoryPool>>,
    /// Publishes and bytes per second (`quotas.publish_rate`, `publish_bytes`).
    pub publish: Option<Arc<crate::wasm::rate::PublishQuota>>,
    /// Outbound HTTP requests per second and in flight (`quotas.http_rate`,
    /// `http_concurrency`).
    pub http: Option<Arc<http::HttpQuota>>,
}

impl Default for GuestQuotas {
    /// The service's own subscribers': a group sharing every core but one.
    fn default() -> GuestQuotas {
        GuestQuotas {
            shares: CpuGroup::new(crate::wasm::cpu::share::service_pool()),
            cpu: None,
            memory: None,
            publish: None,
            http: None,
        }
    }
}

/// What every store of one subscriber shares: its name, capabilities and NATS handles.
pub struct SubscriberHost {
    /// Subscriber name, for logs.
    pub name: Arc<str>,
    /// `<stream>:<durable>`: the namespace of the `Nats-Msg-Id`s of its
    /// outputs, the guest's own included.
    pub id_namespace: String,
    /// Where its publishes, requests and key-value calls go.
    pub wire: Wire,
    /// Subjects the guest may publish and send requests to.
    pub allow: Vec<Subject>,
    /// Which subjects are captured by streams.
    pub routes: Arc<PublishRoutes>,
    /// wasi:config values.
    pub config: WasiConfigVariables,
    /// Linear-memory cap.
    pub memory: u64,
    /// The `Nats-Msg-Id` scheme of outputs.
    pub output_ids: OutputIds,
    /// With `outputs.mode = "atomic"`: the most bytes one message's held
    /// outputs may reach. `None`: outputs are published as they are made.
    pub held_outputs: Option<u64>,
    /// With `outputs.mode = "pipelined"`: a publish to a stream returns once
    /// sent, and its PubAck is awaited after `handle`.
    pub pipelined: bool,
    /// Publishes and requests one message's handler may make.
    pub publishes_per_message: u32,
    /// Its tenant's quotas, shared with the tenant's other subscribers.
    pub quotas: GuestQuotas,
    /// What its guests are admitted against and their time charged to.
    pub cpu: Arc<GuestCpu>,
    /// Settles the subscriber's deliveries (the guest's ack, nak, term and
    /// in-progress go through it too).
    pub settler: Arc<Settler>,
    /// Where its messages' spans start, when traces are on.
    pub tracer: Option<Tracer>,
    /// The key-value buckets it is granted.
    pub kv: keyvalue::KeyValue,
    /// The origins it may send HTTP requests to, and how.
    pub http: Arc<http::OutboundHttp>,
    /// Its secret config values, masked wherever the runtime shows guest text.
    pub secrets: Arc<crate::config::secrets::Secrets>,
    /// Where its guests' output goes instead of the log (a local run).
    pub transcript: Option<Arc<crate::wasm::guest_log::Transcript>>,
}

impl SubscriberHost {
    /// What `sub`'s stores share, publishing over `wire`; counting into `previous`'s statistics when it replaces
    /// a subscriber (see [`Settler::new`]).
    pub fn new(
        sub: &SubscriberConfig,
        wire: Wire,
        routes: Arc<PublishRoutes>,
        buckets: Vec<crate::nats::setup::OpenedBucket>,
        previous: Option<&Settler>,
    ) -> Self {
        let settler = Arc::new(Settler::new(sub, wire.clone(), &routes, previous));
        let quotas = GuestQuotas::default();
        let secrets = Arc::new(crate::config::secrets::Secrets::new(
            &sub.secrets,
            &sub.config,
        ));
        SubscriberHost {
            name: sub.name.as_str().into(),
            id_namespace: format!("{}:{}", sub.stream, sub.durable),
            wire,
            allow: sub.publish.clone(),
            routes,
            config: sub.config.iter().collect(),
            memory: sub.memory,
            output_ids: sub.output_ids,
            held_outputs: (sub.outputs_mode == crate::config::OutputsMode::Atomic)
                .then_some(sub.held_outputs),
            pipelined: sub.outputs_mode == crate::config::OutputsMode::Pipelined,
            publishes_per_message: sub.publishes_per_message,
            cpu: Arc::new(GuestCpu::new(&quotas.shares, None, settler.stats.clone())),
            quotas,
            http: Arc::new(http::OutboundHttp::new(
                sub,
                None,
                settler.stats.clone(),
                secrets.clone(),
            )),
            secrets,
            settler,
            tracer: None,
            transcript: None,
            kv: keyvalue::KeyValue::new(buckets),
        }
    }

    /// The same subscriber within its tenant's `quotas`.
    pub fn with_quotas(mut self, sub: &SubscriberConfig, quotas: GuestQuotas) -> Self {
        self.http = Arc::new(http::OutboundHttp::new(
            sub,
            quotas.http.clone(),
            self.settler.stats.clone(),
            self.secrets.clone(),
        ));
        self.cpu = Arc::new(GuestCpu::new(
            &quotas.shares,
            quotas.cpu.clone(),
            self.settler.stats.clone(),
        ));
        self.quotas = quotas;
        self
    }

    /// The `send` span of a publish or request (`operation`) of `msg`'s
    /// handler to `subject`, its context put in `headers`: when traces are
    /// on and `msg` has a `process` span.
    pub(crate) fn send_span(
        &self,
        msg: &InFlight,
        subject: &str,
        operation: &'static str,
        headers: &mut async_nats::HeaderMap,
    ) -> Option<SendSpan> {
        let (trace, tracer) = msg.trace.get().zip(self.tracer.as_ref())?;
        Some(trace.send(tracer, subject, operation, headers))
    }

    /// Counts one publish, request or key-value write of the message being
    /// handled against the tenant's `publishes_per_message` quota. Without
    /// a message (an instance made ahead of need, while it is instantiated
    /// or warmed up) there is nothing to count it against: refused, so
    /// that nothing is sent once per instance rather than per message.
    pub(crate) fn count_call(&self, msg: &InFlight) -> Result<(), HostError> {
        if msg.is_none() {
            return Err(HostError::Denied(format!(
                "subscriber {:?}: no message yet (an instance made ahead of need, being instantiated or warmed up): publishes, requests and key-value writes wait for one",
                &*self.name
            )));
        }
        let quota = self.publishes_per_message;
        if msg.outputs.attempt() > quota {
            self.settler.stats.quota_refused();
            return Err(HostError::Denied(format!(
                "quota: subscriber {:?} may publish, send requests or write key-value entries {quota} times per message (publishes_per_message)",
                &*self.name
            )));
        }
        Ok(())
    }

    /// A call of the guest handling `msg` waited `waited` for NATS to be
    /// available: not charged to its time limit, and counted.
    pub(crate) fn waited_for_nats(&self, msg: &InFlight, waited: std::time::Duration) {
        msg.waited_for_nats(waited);
        self.settler.stats.nats_unavailable();
    }

    /// Pays for sending `bytes` from the tenant's publish quotas; refused
    /// at once when they are spent.
    pub(crate) fn pay(&self, bytes: usize) -> Result<(), HostError> {
        let Some(quota) = &self.quotas.publish else {
            return Ok(());
        };
        quota.pay(bytes).map_err(|which| {
            self.settler.stats.quota_refused();
            HostError::Denied(format!(
                "quota: subscriber {:?}'s tenant has used its {which}",
                &*self.name
            ))
        })
    }
}

pub use super::memory::{MemoryLimitExceeded, MemoryLimiter};

/// The data of one store: one message, one instance.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) sub: Arc<SubscriberHost>,
    pub(crate) msg: Arc<InFlight>,
    /// wasi:http's own state.
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    /// Sends the guest's HTTP requests through its subscriber's grants.
    pub(crate) http_hooks: http::HttpHooks,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What the NATS messaging interfaces (`types`, `publisher`) see of a
/// store: its subscriber, the message being handled, and the resource
/// table that holds the lent message.
pub struct NatsView<'a> {
    pub(crate) sub: &'a SubscriberHost,
    pub(crate) msg: &'a Arc<InFlight>,
    pub(crate) table: &'a mut ResourceTable,
}

struct NatsData;

impl wasmtime::component::HasData for NatsData {
    type Data<'a> = NatsView<'a>;
}

fn nats_view(h: &mut HostState) -> NatsView<'_> {
    NatsView {
        sub: &h.sub,
        msg: &h.msg,
        table: &mut h.table,
    }
}

/// Adds everything a handler may import to `linker`: locked-down WASI 0.2,
/// wasi:config and the `natsapp:handler` interfaces.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_config::add_to_linker(linker, |h: &mut HostState| {
        wasmtime_wasi_config::WasiConfig::from(&h.sub.config)
    })?;
    generated::natsapp::handler::types::add_to_linker::<HostState, NatsData>(linker, nats_view)?;
    generated::natsapp::handler::publisher::add_to_linker::<HostState, NatsData>(
        linker, nats_view,
    )?;
    keyvalue::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    Ok(())
}
