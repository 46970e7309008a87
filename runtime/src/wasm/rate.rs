//! A tenant's publish quotas (`quotas.publish_rate`, `quotas.publish_bytes`):
//! token buckets refilled every second's worth, holding at most one
//! second. A publish or request the buckets cannot pay for is refused at
//! once — a flood gets errors, never a queue in the host.

use std::sync::Mutex;
use std::time::Instant;

/// One rate: `per_second` units, at most one second's worth saved up.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// A full bucket of `per_second`.
    pub fn new(per_second: u64) -> RateLimit {
        RateLimit {
            per_second,
            state: Mutex::new((per_second as f64, Instant::now())),
        }
    }

    /// The rate, per second.
    pub fn per_second(&self) -> u64 {
        self.per_second
    }

    /// Takes `n` units if the bucket holds them.
    pub fn take(&self, n: u64) -> bool {
        let mut s = self.state.lock().expect("rate lock");
        let now = Instant::now();
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

/// A tenant's publish quotas.
#[derive(Debug)]
pub struct PublishQuota {
    /// Publishes and requests per second.
    pub rate: Option<RateLimit>,
    /// Payload bytes per second.
    pub bytes: Option<RateLimit>,
}

impl PublishQuota {
    /// Pays for one publish of `bytes`, or names the quota that refuses it.
    pub fn pay(&self, bytes: usize) -> Result<(), String> {
        if let Some(r) = &self.rate {
            if !r.take(1) {
                return Err(format!("publish_rate of {}/s", r.per_second()));
            }
        }
        if let Some(b) = &self.bytes {
            if !b.take(bytes as u64) {
                return Err(format!("publish_bytes of {} bytes/s", b.per_second()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_one_second_is_refused() {
        let q = PublishQuota {
            rate: Some(RateLimit::new(100)),
            bytes: Some(RateLimit::new(1000)),
        };
        let paid = (0..150).filter(|_| q.pay(1).is_ok()).count();
        assert!((100..=101).contains(&paid), "{paid}");
        assert_eq!(q.pay(1), Err("publish_rate of 100/s".to_string()));
        let bytes = PublishQuota {
            rate: None,
            bytes: Some(RateLimit::new(1000)),
        };
        assert_eq!(bytes.pay(900), Ok(()));
        assert_eq!(
            bytes.pay(200),
            Err("publish_bytes of 1000 bytes/s".to_string())
        );
    }
}
