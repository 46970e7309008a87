//! Losing the server: resume after it returns; stop when reconnecting is off.

use crate::{kit_service, Kit};
use natsapp_wasm_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_resumes_after_the_server_restarts() {
    // A short ack_wait: an ack lost with the killed server is redelivered soon.
    let text = kit_service("pull = { timeout = \"1s\" }\nconsumer = { ack_wait = \"2s\" }")
        .replace(
            "[nats]\n",
            "[nats]\nreconnect_time_wait = \"100ms\"\nmax_reconnect_attempts = -1\n",
        );
    let mut kit = Kit::start(&text).await;
    for _ in 0..5 {
        js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    stats_until(&kit.running, "kit", "five acked", |s| s.acked == 5).await;

    // A hard kill: the server may lose acks it had not yet written, or that
    // were in flight, and then redelivers those messages (at least once);
    // nothing may be lost.
    kit.server.restart();
    let client = kit.server.client().await;
    let mut handled = subscribe(&client, "testkit.out.sleep").await;
    let js = kit.server.jetstream().await;
    for _ in 0..5 {
        js_publish(&js, "in.kit", r#"{"op":"sleep","ms":0}"#).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(
            next_json(&mut handled, Duration::from_secs(20)).await["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    seqs.sort();
    assert_eq!(
        seqs,
        vec![6, 7, 8, 9, 10],
        "the messages published after the restart were handled"
    );
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    // Messages whose acks the killed server lost are delivered again and
    // acked without running the handler a second time.
    assert_eq!(s.acked, 10, "each message handled once: {s:?}");
    assert_eq!(s.received, s.acked + s.replayed, "{s:?}");
    assert_eq!((s.naked, s.settle_errors, s.in_flight), (0, 0, 0));
    assert_eq!(kit.running.stats.snapshot().connection_status, "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_reconnect_false_a_lost_connection_stops_the_process_with_exit_1() {
    let mut server = NatsServer::start();
    let text = kit_service("").replace("[nats]\n", "[nats]\nallow_reconnect = false\n");
    let file = ServiceFile::new(&server, &text);
    let mut child = Command::new(natsapp_bin())
        .args(["run", file.path().to_str().unwrap()])
        .env_remove("NATS_SERVERS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    server.stop();
    let out = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "still running after the server went away"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with(
            "error: the connection to NATS was lost and nats.allow_reconnect is false\n"
        ),
        "{stderr}"
    );
}
