//! The benchmark's no-op handler: returns ok, so the runtime acks.

use natsapp_guest::{export_handler, Data, Handler, Message, Result};

struct Noop;

impl Handler for Noop {
    fn handle(_data: Data, _msg: &Message) -> Result {
        Ok(())
    }
}

export_handler!(Noop);
