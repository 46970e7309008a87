//! The benchmark's endpoint: answers a request `{"data": …}` with its
//! `data` and an `X-Answered-By` header — the work the benchmark's raw
//! async-nats responder does, so that the two compare the runtime alone.

use natsapp_guest::{export_handler, Data, Error, Handler, Message, Result};

struct Responder;

#[derive(serde::Deserialize)]
struct Request {
    data: String,
}

impl Handler for Responder {
    fn handle(data: Data, msg: &Message) -> Result {
        let asked: Request =
            serde_json::from_slice(data.bytes()).map_err(|e| Error::reject(e.to_string()))?;
        msg.respond_with_headers(asked.data, &[("X-Answered-By".into(), "rust".into())])?;
        Ok(())
    }
}

export_handler!(Responder);
