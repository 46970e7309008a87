//! Echo: publishes every payload, with its headers, to the subject in the
//! subscriber's `config.output` (default `echo.out`), then lets the runtime ack.

use natsapp_guest::{export_handler, Data, Handler, Message, Result};

struct Echo;

impl Handler for Echo {
    fn handle(data: Data, msg: &Message) -> Result {
        let output = natsapp_guest::config::get("output").unwrap_or_else(|| "echo.out".to_string());
        let mut headers: Vec<(String, String)> =
            msg.headers().into_iter().filter(|(n, _)| !n.starts_with("Nats-")).collect();
        headers.push(("Echo-Subject".to_string(), msg.subject()));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        natsapp_guest::publish_with_headers(&output, data.bytes(), &headers)?;
        Ok(())
    }
}

export_handler!(Echo);
