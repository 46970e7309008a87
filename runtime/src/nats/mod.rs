//! Steps 2, 3 and 7 of the data flow, the NATS leaf: `connect` opens the
//! connection with every option applied; `setup` declares or verifies
//! streams and durable consumers; `publish` sends outputs; `ack` is the
//! acknowledgement wire format. Nothing here decides how a message is
//! settled (that is `settle`) or imports the layers above.

pub mod ack;
pub mod connect;
pub mod publish;
pub mod setup;
