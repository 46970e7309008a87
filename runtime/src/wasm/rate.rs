//! A tenant's publish quotas (`quotas.publish_rate`, `quotas.publish_bytes`):
//! token buckets refilled every second's worth, holding at most one
//! second. A publish or request the buckets cannot pay for is refused at
//! once — a flood gets errors, never a queue in the host.

use super::clock::{Clock, SystemClock};
use std::sync::Mutex;
use std::time::Instant;

/// One rate: `per_second` units, at most one second's worth saved up; on
/// the system's clock (or `C`).
#[derive(Debug)]
pub struct RateLimit<C: Clock = SystemClock> {
    clock: C,
    per_second: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// A full bucket of `per_second`.
    pub fn new(per_second: u64) -> RateLimit {
        RateLimit::with_clock(per_second, SystemClock)
    }
}

impl<C: Clock> RateLimit<C> {
    /// A full bucket of `per_second`, timed by `clock`.
    pub fn with_clock(per_second: u64, clock: C) -> RateLimit<C> {
        let now = clock.now();
        RateLimit {
            clock,
            per_second,
            state: Mutex::new((per_second as f64, now)),
        }
    }

    /// The rate, per second.
    pub fn per_second(&self) -> u64 {
        self.per_second
    }

    /// Takes `n` units if the bucket holds them.
    pub fn take(&self, n: u64) -> bool {
        let mut s = self.state.lock().expect("rate lock");
        let now = self.clock.now();
        let cap = self.per_second as f64;
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * cap).min(cap);
        s.1 = now;
        if s.0 >= n as f64 {
            s.0 -= n as f64;
            true
        } else {
            false
        }
    }
}

/// A publish quota that refused a publish: which, and its rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaSpent {
    /// `quotas.publish_rate`.
    #[error("publish_rate of {0}/s")]
    Rate(u64),
    /// `quotas.publish_bytes`.
    #[error("publish_bytes of {0} bytes/s")]
    Bytes(u64),
}

/// A tenant's publish quotas.
#[derive(Debug)]
pub struct PublishQuota<C: Clock = SystemClock> {
    /// Publishes and requests per second.
    pub rate: Option<RateLimit<C>>,
    /// Payload bytes per second.
    pub bytes: Option<RateLimit<C>>,
}

impl<C: Clock> PublishQuota<C> {
    /// Pays for one publish of `bytes`, or names the quota that refuses it.
    pub fn pay(&self, bytes: usize) -> Result<(), QuotaSpent> {
        if let Some(r) = &self.rate {
            if !r.take(1) {
                return Err(QuotaSpent::Rate(r.per_second()));
            }
        }
        if let Some(b) = &self.bytes {
            if !b.take(bytes as u64) {
                return Err(QuotaSpent::Bytes(b.per_second()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::clock::ManualClock;
    use std::time::Duration;

    #[test]
    fn a_burst_past_one_second_is_refused() {
        let clock = ManualClock::new();
        let q = PublishQuota {
            rate: Some(RateLimit::with_clock(100, clock.clone())),
            bytes: Some(RateLimit::with_clock(1000, clock.clone())),
        };
        let paid = (0..150).filter(|_| q.pay(1).is_ok()).count();
        assert_eq!(paid, 100, "one second's worth, at once");
        assert_eq!(q.pay(1), Err(QuotaSpent::Rate(100)));
        assert_eq!(q.pay(1).unwrap_err().to_string(), "publish_rate of 100/s");
        clock.advance(Duration::from_millis(10));
        assert_eq!(q.pay(1), Ok(()), "10 ms at 100/s earns one more");
        assert_eq!(q.pay(1), Err(QuotaSpent::Rate(100)));
        clock.advance(Duration::from_secs(60));
        let paid = (0..150).filter(|_| q.pay(1).is_ok()).count();
        assert_eq!(
            paid, 100,
            "a quiet minute saves up one second's worth, no more"
        );

        let bytes = PublishQuota {
            rate: None,
            bytes: Some(RateLimit::with_clock(1000, clock.clone())),
        };
        assert_eq!(bytes.pay(900), Ok(()));
        assert_eq!(bytes.pay(200), Err(QuotaSpent::Bytes(1000)));
        assert_eq!(
            bytes.pay(200).unwrap_err().to_string(),
            "publish_bytes of 1000 bytes/s"
        );
    }
}
