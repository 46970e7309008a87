//! Steps 2, 3, 6 and 7 of the data flow: the NATS side. `connect` opens the
//! connection with every option applied; `setup` declares or verifies
//! streams and durable consumers; `pull` fetches with bounded concurrency;
//! `ack` decides how a handled message is settled; `publish` sends outputs.

pub mod ack;
pub mod connect;
pub mod publish;
pub mod pull;
pub mod setup;
