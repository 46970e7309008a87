//! A handler built against another version of the package (0.2.0): the
//! runtime must refuse it, naming the export it expected.

wit_bindgen::generate!({
    inline: "
        package natsapp:handler@0.2.0;
        interface handler {
            handle: func(data: list<u8>) -> result<_, string>;
        }
        world service { export handler; }
    ",
});

struct Handler;

impl exports::natsapp::handler::handler::Guest for Handler {
    fn handle(_data: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

export!(Handler);
