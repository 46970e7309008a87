//! What the message path counts, with relaxed atomics: one subscriber's
//! messages, settlements, failures and latencies (`subscriber`), and the
//! calls its guests make beyond NATS (`capabilities`). The layers that
//! count (settle, wasm, dispatch, scheduler) write here; observability
//! reads their snapshots.

mod capabilities;
mod subscriber;

pub use capabilities::{HttpOutcome, KvOp, KvOutcome};
pub use subscriber::{LatencySnapshot, Settled, SubscriberSnapshot, SubscriberStats};
