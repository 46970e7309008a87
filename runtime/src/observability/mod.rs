//! How the running service is seen from outside: statistics (`stats`),
//! logs (`logs`), trace export (`traces`), the admin endpoint with metrics
//! and probes (`admin`) and the NATS micro-service answer (`micro`). It
//! reads the layers below — the counters, the roster's registry, the
//! message path's spans — and nothing below imports it.

pub mod admin;
pub mod logs;
pub mod micro;
pub mod stats;
pub mod traces;
