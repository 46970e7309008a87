//! Steps 2, 3 and 7 of the data flow, the NATS leaf: `connect` opens the
//! connection with every option applied, `connection` is what subscribers
//! share on it; `setup` declares or verifies streams and durable
//! consumers; `pull` reads one pull request to its real end; `publish`
//! sends outputs, `batch` commits an atomic subscriber's outputs to a
//! stream as one batch; `ack` is the acknowledgement wire format;
//! `unavailable` retries a call while NATS cannot answer it; `micro`
//! answers the micro-service protocol's `$SRV` requests; `wire` is
//! where all of it goes (a server, or a stand-in in this process, for
//! running one message without one). Nothing here decides how a message
//! is settled (that is `settle`) or imports the layers above.

pub mod ack;
pub mod batch;
pub mod connect;
pub mod connection;
pub mod gather;
pub mod micro;
pub mod objects;
pub mod publish;
pub mod pull;
pub mod setup;
pub mod unavailable;
pub mod wire;

/// Bytes `headers` take on the wire, which the server counts against
/// `max_payload`: none when there are none, else `NATS/1.0\r\n`, a
/// `Name: value\r\n` line each, and `\r\n`.
pub fn header_size(headers: &async_nats::HeaderMap) -> usize {
    let mut lines = 0;
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            lines += name.len() + 2 + v.as_str().len() + 2;
        }
    }
    if lines == 0 {
        0
    } else {
        "NATS/1.0\r\n\r\n".len() + lines
    }
}

/// Header pairs in order, a name once per value (as the WIT `headers` type
/// carries them).
pub fn header_pairs(headers: Option<&async_nats::HeaderMap>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(headers.len());
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for v in values {
            out.push((name.to_string(), v.as_str().to_string()));
        }
    }
    out
}
