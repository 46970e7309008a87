//! What came of a delivery's `handle` call, and what the guest did to the
//! message itself: the facts `settle::disposition` decides from.

use std::time::Duration;

/// Why a handler invocation failed without the guest deciding anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureCause {
    /// A wasm trap (unreachable, out-of-bounds, stack overflow, …).
    Trap,
    /// A crash: a Rust guest panic, an uncaught exception or thrown
    /// non-error in a Python or JavaScript guest, `natsapp_crash` in C.
    Panic,
    /// The per-message time limit (`limits.timeout`) ran out.
    Timeout,
    /// The guest tried to grow its memory past `limits.memory`.
    Memory,
    /// The component could not be instantiated for this message.
    Instantiate,
    /// The handler succeeded but its atomic outputs could not all be
    /// committed (`outputs.mode = "atomic"`).
    Commit,
    /// The handler succeeded but one of its pipelined outputs could not be
    /// stored (`outputs.mode = "pipelined"`).
    Output,
}

impl FailureCause {
    /// Every cause, for statistics.
    pub const ALL: [FailureCause; 7] = [
        Self::Trap,
        Self::Panic,
        Self::Timeout,
        Self::Memory,
        Self::Instantiate,
        Self::Commit,
        Self::Output,
    ];

    /// The label used in logs and statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Memory => "memory_limit",
            Self::Instantiate => "instantiate",
            Self::Commit => "commit",
            Self::Output => "output",
        }
    }
}

/// What came of one `handle` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `handle` returned `ok`.
    Ok,
    /// `handle` returned `retry`.
    Retry {
        /// Delay the guest asked for.
        delay: Option<Duration>,
        /// Why, for the log.
        reason: String,
    },
    /// `handle` returned `reject`.
    Reject(String),
    /// The invocation failed: trap, panic, limit.
    Failed {
        /// The cause, for statistics.
        cause: FailureCause,
        /// A readable description, for the log and the dead-letter copy.
        detail: String,
    },
}

/// What the guest did to the message itself during `handle`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ByGuest {
    /// Nothing: the runtime settles it.
    #[default]
    Nothing,
    /// It acked or nak'd: already sent; the runtime adds nothing.
    Settled,
    /// It acked, with atomic outputs: the runtime acks once they are
    /// committed (when `handle` returns ok; a failure after it counts).
    Ack,
    /// It nak'd, with atomic outputs: nothing is committed, and the
    /// runtime naks when `handle` returns.
    Nak(Option<Duration>),
    /// It asked for a term (with its reason): the runtime terms it after
    /// `handle` returns, dead-lettering it first like a reject.
    Term(Option<String>),
}
