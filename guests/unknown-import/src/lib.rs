//! A handler that imports an interface the runtime does not provide
//! (publisher from package version 0.2.0): the runtime must refuse it,
//! naming the import and the version it provides.

wit_bindgen::generate!({
    inline: "
        package natsapp:handler@0.2.0;
        interface publisher {
            publish: func(subject: string) -> result<_, string>;
        }
        interface handler {
            handle: func(data: list<u8>) -> result<_, string>;
        }
        world service { import publisher; export handler; }
    ",
});

struct Handler;

impl exports::natsapp::handler::handler::Guest for Handler {
    fn handle(_data: Vec<u8>) -> Result<(), String> {
        natsapp::handler::publisher::publish("x")
    }
}

export!(Handler);
