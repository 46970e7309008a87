//! The benchmark's relay: publishes each payload, with its headers, to the
//! subject in `config.output` (waiting for the PubAck), then lets the
//! runtime ack.

use natsapp_guest::{export_handler, Data, Handler, Message, Result};

struct Relay;

impl Handler for Relay {
    fn handle(data: Data, msg: &Message) -> Result {
        let output = natsapp_guest::config::get("output").unwrap_or_else(|| "relay.out".into());
        let headers: Vec<(String, String)> = msg.headers().into_iter().filter(|(n, _)| !n.starts_with("Nats-")).collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        natsapp_guest::publish_with_headers(&output, data.bytes(), &headers)?;
        Ok(())
    }
}

export_handler!(Relay);
