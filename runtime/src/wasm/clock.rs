//! The time a tenant's quotas are measured against: the system's monotonic
//! clock when the service runs, and in unit tests a clock that moves only
//! when the test moves it, so what a budget admits is exact.

use std::time::Instant;

/// Where a quota reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until advanced; its clones share one time.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<Instant>>);

#[cfg(test)]
impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock(std::sync::Arc::new(std::sync::Mutex::new(Instant::now())))
    }
}

#[cfg(test)]
impl ManualClock {
    /// A clock at an arbitrary instant.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves it `by` forward.
    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().expect("clock lock")
    }
}
