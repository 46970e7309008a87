//! A handler built against natsapp:handler@0.1.0, the first released
//! version of the package (its WIT is kept as released in `wit/`). The
//! runtime keeps serving it: it publishes each payload to `compat.out` with
//! the input's subject and delivery count in headers, then returns ok.

wit_bindgen::generate!({
    path: "wit",
    world: "natsapp:handler/service@0.1.0",
});

use exports::natsapp::handler::handler::{Guest, HandleError};
use natsapp::handler::publisher::publish;
use natsapp::handler::types::Message;

struct Handler;

impl Guest for Handler {
    fn handle(data: Vec<u8>, msg: &Message) -> Result<(), HandleError> {
        let headers = vec![
            ("Compat-Subject".to_string(), msg.subject()),
            ("Compat-Delivered".to_string(), msg.delivery().delivered.to_string()),
        ];
        publish("compat.out", &data, &headers)
            .map(|_| ())
            .map_err(|e| HandleError::Reject(format!("{e:?}")))
    }
}

export!(Handler);
