//! Messages through handlers end to end.

use natsapp_wasm_tests::*;

const ECHO_SERVICE: &str = r#"
[service]
name = "echo-service"

[nats]
servers = ["{url}"]

[[streams]]
name = "IN"
subjects = ["in.>"]

[[streams]]
name = "OUT"
subjects = ["out.>"]

[[subscribers]]
name = "echo"
component = "{echo}"
subject = "in.echo"
stream = "IN"
durable = "echo"
concurrency = 4
pull = { batch_size = 8, timeout = "1s" }
publish = ["out.>"]
config = { output = "out.echo" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_in_n_out_all_acked() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ECHO_SERVICE);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    const N: usize = 200;
    for i in 0..N {
        js_publish(&js, "in.echo", format!("message {i}")).await;
    }
    stream_has(&js, "OUT", N as u64).await;
    drained(&js, "IN", "echo").await;
    let out = js.get_stream("OUT").await.unwrap();
    let stats = running.stop().await;
    let echo = &stats.subscribers[0];
    assert_eq!(
        (
            echo.received,
            echo.acked,
            echo.naked,
            echo.termed,
            echo.in_flight
        ),
        (N as u64, N as u64, 0, 0, 0)
    );
    assert_eq!(stats.connection_status, "connected");

    // Every payload came out once, with the input's subject in a header.
    let mut seen = std::collections::BTreeSet::new();
    for seq in 1..=N as u64 {
        let m = out.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), "out.echo");
        assert_eq!(
            m.headers.get("Echo-Subject").map(|v| v.as_str()),
            Some("in.echo")
        );
        assert!(
            m.headers.get("Nats-Msg-Id").is_some(),
            "outputs carry a Nats-Msg-Id"
        );
        seen.insert(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    assert_eq!(seen.len(), N);
}
