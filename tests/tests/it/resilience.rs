//! Losing the server: resume after it returns; stop when reconnecting is off.

use crate::{kit_service, Kit};
use nats_test_server::{NatsProxy, Swallowing};
use natsapp_wasm_tests::*;
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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let mut child = spawn_run(&file, &log, &[]);
    // Running, not only its durable created: stopped while start-up still
    // waits for the server's answer, the process reports that request's
    // failure rather than the connection's end.
    logged(&log, " running ").await;
    server.stop();
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(15)))
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.ends_with(
            "error: the connection to NATS was lost and nats.allow_reconnect is false\n"
        ),
        "{stderr}"
    );
}

/// The kit service behind a [`NatsProxy`], one message handled, then
/// pull requests swallowed as `how` says and ten messages published: the
/// server holds them, delivers none and waits for no ack, while the
/// connection is up. ack_wait is far above what the tests wait: a message
/// handled later was delivered to a new pull, not redelivered.
struct Stalled {
    proxy: NatsProxy,
    running: Running,
    js: async_nats::jetstream::Context,
    handled: async_nats::Subscriber,
    _server: NatsServer,
}

impl Stalled {
    async fn start(pull_timeout: &str, how: Swallowing) -> Stalled {
        let server = NatsServer::start();
        let proxy = NatsProxy::start(server.url()).await;
        let text = kit_service(&format!(
            "pull = {{ timeout = \"{pull_timeout}\" }}\nconsumer = {{ ack_wait = \"60s\" }}"
        ))
        .replace("{url}", &proxy.url());
        let file = ServiceFile::new(&server, &text);
        let running = Running::start(&file).await;
        let client = server.client().await;
        let js = server.jetstream().await;
        let mut handled = subscribe(&client, "testkit.out.sleep").await;
        js_publish(&js, "in.kit", r#"{"op":"sleep","ms":0}"#).await;
        next_json(&mut handled, Duration::from_secs(20)).await;
        proxy.swallow(how);
        let before = proxy.swallowed();
        eventually(
            Duration::from_secs(20),
            "a pull request swallowed",
            || async { (proxy.swallowed() > before).then_some(()) },
        )
        .await;
        for _ in 0..10 {
            js_publish(&js, "in.kit", r#"{"op":"sleep","ms":0}"#).await;
        }
        eventually(
            Duration::from_secs(20),
            "the stall seen on the server",
            || async { (consumer_counts(&js, "IN", "kit").await == (10, 0)).then_some(()) },
        )
        .await;
        Stalled {
            proxy,
            running,
            js,
            handled,
            _server: server,
        }
    }

    /// Lets the requests through again; every held message must be handled
    /// once, and nothing delivered twice.
    async fn recovers(mut self) -> natsapp_wasm::observability::stats::SubscriberSnapshot {
        assert!(
            silent(&mut self.handled, Duration::from_secs(1)).await,
            "nothing handled while the requests are swallowed"
        );
        self.proxy.swallow(Swallowing::Off);
        let mut seqs = Vec::new();
        for _ in 0..10 {
            seqs.push(
                next_json(&mut self.handled, Duration::from_secs(30)).await["seq"]
                    .as_u64()
                    .unwrap(),
            );
        }
        seqs.sort();
        assert_eq!(
            seqs,
            (2..=11).collect::<Vec<_>>(),
            "every message held during the stall was handled"
        );
        let s = settled_stats(&self.running, "kit").await;
        assert_eq!(
            (s.received, s.acked, s.naked),
            (11, 11, 0),
            "none delivered twice: {s:?}"
        );
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_the_server_never_sees_is_found_and_sent_again() {
    // The requests never reach the server and the runtime hears nothing
    // about them: no heartbeat, no end.
    let stalled = Stalled::start("2s", Swallowing::Silently).await;
    let swallowed = stalled.proxy.swallowed();
    eventually(
        Duration::from_secs(20),
        "the silent request given up and sent again",
        || async {
            (stalled.proxy.swallowed() > swallowed
                && stalled.running.subscriber("kit").pulls_silent > 0)
                .then_some(())
        },
    )
    .await;
    let s = stalled.recovers().await;
    assert!(s.pulls_silent >= 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_looks_alive_but_brings_nothing_is_found_stalled_and_got_going() {
    // The proxy answers the swallowed requests as a server with nothing to
    // deliver would: heartbeats, then a 408 at expiry. The runtime hears a
    // live pull that brings nothing: a stall only the durable's state shows.
    let stalled = Stalled::start("1s", Swallowing::Answering).await;
    let found = stats_until(&stalled.running, "kit", "the stall found", |s| {
        s.pulls_stalled > 0
    })
    .await;
    assert_eq!(
        found.pulls_silent, 0,
        "every request looked alive: {found:?}"
    );
    assert_eq!(consumer_counts(&stalled.js, "IN", "kit").await, (10, 0));
    let s = stalled.recovers().await;
    assert!(s.pulls_stalled >= 1, "{s:?}");
}
