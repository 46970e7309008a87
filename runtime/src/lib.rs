//! natsapp-wasm runs NATS JetStream message handlers compiled as sandboxed
//! WASI components.
//!
//! ```text
//!  service.toml ──► config ──► nats::connect ──► roster: prepare (nats::setup: streams,
//!                                                durable consumers; tenants) ──► commit
//!                                                      │
//!            ┌─────────────────────────────────────────┘
//!            ▼
//!   scheduler (permit → fetch ≤ permits; failures by kind) ──► dispatch (one message)
//!                                               │  wasm::invoke: store, limits,
//!                                               │  guest `handle(data, msg)`; host imports
//!                                               │  publish / request (nats::publish, PubAck,
//!                                               │  outputs: Nats-Msg-Id; outputs::held
//!                                               │  when atomic)
//!                                               ▼
//!            settle::disposition ──► settle::commit (atomic outputs: nats::batch)
//!                                ──► settle (every ack / nak / term / in-progress /
//!                                            dead letter) ──► nats::ack (wire)
//! ```
//!
//! Layers import downwards only:
//!
//! ```text
//! cli ─► service ─► observability (stats, logs, traces, admin, micro)
//!                 ─► roster (change, prepare, commit, reload, tenants, registry)
//!                 ─► deploy (fragments in key-value: watch, rollout, status)
//!                 ─► redrive (dead letters back on their subject)
//!                 ─► scheduler ─► dispatch ─► wasm ─► settle ─► counters
//!                 ─► endpoint (core requests answered) ─► wasm
//!                 ─► message ─► outputs ─► nats ─► config          error: below all
//!   (push) ─► oci (components read from OCI registries) ─► config
//! ```
//!
//! The message as it travels (`message`) and what the message path counts
//! (`counters`) sit below every layer that uses them; observability reads
//! the layers below it and none of them imports it. A test
//! (`tests/layers.rs`) fails on an import cycle. A running service stops
//! on its own only for a [`fatal::Fatal`] reason. [`testing`] runs one
//! message through the same dispatch path with `testing::local` in place
//! of a server (`natsapp-wasm invoke`, handler authors' tests).

pub mod asyncapi;
pub mod config;
pub mod counters;
pub mod deploy;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod fatal;
pub mod grants;
pub mod message;
pub mod nats;
pub mod observability;
pub mod oci;
pub mod outputs;
pub mod plan;
pub mod redrive;
pub mod roster;
pub mod scaffold;
pub mod scheduler;
pub mod service;
pub mod settle;
pub mod testing;
pub mod wasm;

pub use roster::reload;
pub use service::{check, run, Error, Service, ENVIRONMENT_VARIABLES};
