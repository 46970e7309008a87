//! A handler built against natsapp:handler@0.1.2 (its WIT is kept as
//! released in `wit/`), the version before `warm-up`. The runtime keeps
//! serving it: it answers each message with `respond` (new in 0.1.2),
//! echoing the payload with its delivery count in a header, then returns ok.

wit_bindgen::generate!({
    path: "wit",
    world: "natsapp:handler/service@0.1.2",
});

use exports::natsapp::handler::handler::{Guest, HandleError};
use natsapp::handler::types::Message;

struct Handler;

impl Guest for Handler {
    fn handle(data: Vec<u8>, msg: &Message) -> Result<(), HandleError> {
        let headers = vec![(
            "Compat-Delivered".to_string(),
            msg.delivery().delivered.to_string(),
        )];
        msg.respond(&data, &headers)
            .map_err(|e| HandleError::Reject(format!("{e:?}")))
    }
}

export!(Handler);
