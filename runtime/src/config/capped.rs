//! Subscriber settings a tenant's quota overrides. A subscriber asking for
//! more than its tenant allows runs within the quota: not an error (a file
//! stays valid when an operator lowers a quota), but never silent —
//! `check` prints each one and every start and reload logs it.

use super::{ByteSize, Config, SubscriberConfig, TenantConfig};
use std::fmt;

/// A subscriber setting its tenant's quota caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    /// The subscriber.
    pub subscriber: String,
    /// Its tenant.
    pub tenant: String,
    /// The subscriber's key, as in service.toml.
    pub setting: &'static str,
    /// Its value.
    pub asked: String,
    /// The tenant's key that caps it.
    pub quota: &'static str,
    /// The quota's value: what the subscriber gets at most.
    pub allowed: String,
}

impl fmt::Display for Capped {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "subscriber {:?} sets {} = {}, but its tenant {:?} allows {} ({}): it gets at most {}",
            self.subscriber,
            self.setting,
            self.asked,
            self.tenant,
            self.allowed,
            self.quota,
            self.allowed
        )
    }
}

impl Config {
    /// Every subscriber setting its tenant's quotas cap, in file order.
    pub fn capped(&self) -> Vec<Capped> {
        let mut capped = Vec::new();
        let handlers = (self.subscribers.iter()).chain(self.endpoints.iter().map(|e| &e.handler));
        for sub in handlers {
            let Some(tenant) = sub.tenant.as_deref().and_then(|t| self.tenant(t)) else {
                continue;
            };
            capped.extend(capped_by(sub, tenant));
        }
        capped
    }
}

fn capped_by(sub: &SubscriberConfig, tenant: &TenantConfig) -> Vec<Capped> {
    let q = &tenant.quotas;
    let mut capped = Vec::new();
    let mut cap = |setting, asked: String, quota, allowed: String| {
        capped.push(Capped {
            subscriber: sub.name.clone(),
            tenant: tenant.name.clone(),
            setting,
            asked,
            quota,
            allowed,
        })
    };
    if let Some(allowed) = q.concurrency.filter(|&n| sub.concurrency > n) {
        // Handlers wait for the tenant's slots: never more run at once.
        cap(
            "concurrency",
            sub.concurrency.to_string(),
            "quotas.concurrency",
            allowed.to_string(),
        );
    }
    if let Some(allowed) = q.memory.filter(|&m| sub.memory > m) {
        // One instance can never grow past what the whole tenant may hold.
        cap(
            "limits.memory",
            size(sub.memory),
            "quotas.memory",
            size(allowed),
        );
    }
    capped
}

fn size(bytes: u64) -> String {
    format!("{:?}", ByteSize(bytes).to_string())
}
