//! Counters of the capabilities a guest calls beyond NATS: key-value calls
//! by operation and outcome, outbound HTTP requests by outcome.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How a guest's outbound HTTP request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A response came (whatever its status).
    Ok,
    /// Refused before anything was sent: not granted, an internal address
    /// not granted as one, or a quota.
    Denied,
    /// No connection, response or next body chunk in time.
    Timeout,
    /// A response body cut at `limits.http_response` (its request also
    /// counted `ok` when the head came first).
    TooLarge,
    /// Anything else: refused connection, TLS, DNS, protocol errors.
    Failed,
}

impl HttpOutcome {
    /// Every outcome, in the order of the counters.
    pub const ALL: [HttpOutcome; 5] = [
        HttpOutcome::Ok,
        HttpOutcome::Denied,
        HttpOutcome::Timeout,
        HttpOutcome::TooLarge,
        HttpOutcome::Failed,
    ];

    /// The name in statistics and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpOutcome::Ok => "ok",
            HttpOutcome::Denied => "denied",
            HttpOutcome::Timeout => "timeout",
            HttpOutcome::TooLarge => "too_large",
            HttpOutcome::Failed => "failed",
        }
    }
}

/// A key-value call a guest makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// `get`
    Get,
    /// `put`
    Put,
    /// `create`
    Create,
    /// `update`
    Update,
    /// `delete`
    Delete,
}

impl KvOp {
    /// Every operation, in the order of the counters.
    pub const ALL: [KvOp; 5] = [
        KvOp::Get,
        KvOp::Put,
        KvOp::Create,
        KvOp::Update,
        KvOp::Delete,
    ];

    /// The name in statistics and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KvOp::Get => "get",
            KvOp::Put => "put",
            KvOp::Create => "create",
            KvOp::Update => "update",
            KvOp::Delete => "delete",
        }
    }
}

/// How a key-value call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOutcome {
    /// Done (a `get` of a key without a value included).
    Ok,
    /// A `create` or `update` that lost to another write: nothing written.
    Conflict,
    /// Refused by the grants, the quotas or the size bounds; nothing sent.
    Denied,
    /// The server failed it or did not answer.
    Failed,
}

impl KvOutcome {
    /// Every outcome, in the order of the counters.
    pub const ALL: [KvOutcome; 4] = [
        KvOutcome::Ok,
        KvOutcome::Conflict,
        KvOutcome::Denied,
        KvOutcome::Failed,
    ];

    /// The name in statistics and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KvOutcome::Ok => "ok",
            KvOutcome::Conflict => "conflict",
            KvOutcome::Denied => "denied",
            KvOutcome::Failed => "failed",
        }
    }
}

/// One subscriber's key-value and HTTP counters.
#[derive(Debug, Default)]
pub(super) struct CapabilityCounters {
    kv: [[AtomicU64; KvOutcome::ALL.len()]; KvOp::ALL.len()],
    http: [AtomicU64; HttpOutcome::ALL.len()],
}

impl CapabilityCounters {
    pub(super) fn kv(&self, op: KvOp, outcome: KvOutcome) {
        self.kv[op as usize][outcome as usize].fetch_add(1, Relaxed);
    }

    pub(super) fn http(&self, outcome: HttpOutcome) {
        self.http[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Key-value calls by (operation, outcome); only those that happened.
    pub(super) fn kv_snapshot(&self) -> Vec<(String, String, u64)> {
        KvOp::ALL
            .iter()
            .flat_map(|op| {
                KvOutcome::ALL.iter().filter_map(move |outcome| {
                    let n = self.kv[*op as usize][*outcome as usize].load(Relaxed);
                    (n > 0).then(|| (op.as_str().to_string(), outcome.as_str().to_string(), n))
                })
            })
            .collect()
    }

    /// HTTP requests by outcome; only those that happened.
    pub(super) fn http_snapshot(&self) -> Vec<(String, u64)> {
        HttpOutcome::ALL
            .iter()
            .filter_map(|o| {
                let n = self.http[*o as usize].load(Relaxed);
                (n > 0).then(|| (o.as_str().to_string(), n))
            })
            .collect()
    }
}
