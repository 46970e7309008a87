//! Nothing lost, nothing duplicated, at the edges: the last delivery,
//! a guest's own term, dead-letter copies too large to store, subjects no
//! stream captures, output ids across redeliveries, a durable deleted or
//! changed under the runtime, a paused consumer, a memory stream lost in a
//! restart, and the exit code when reconnecting gives up.

use crate::{dead_letter, header, kit_service, with_dlq, Kit};
use async_nats::jetstream::consumer::{self, DeliverPolicy};
use natsapp_wasm_tests::*;
use std::time::Duration;

/// Waits until the service's watcher has seen the consumer's ack floor at `seq`.
async fn floor_seen(running: &Running, seq: u64) {
    stats_until(running, "kit", &format!("ack floor {seq} observed"), |s| {
        s.ack_floor >= seq
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_abandoned_at_shutdown_on_its_last_delivery_is_dead_lettered_after_restart() {
    let server = NatsServer::start();
    let text = with_dlq("consumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"")
        .replace("graceful_timeout = \"5s\"", "graceful_timeout = \"500ms\"");
    let file = ServiceFile::new(&server, &text);
    let js = server.jetstream().await;

    let first = Running::start(&file).await;
    js_publish(&js, "in.kit", r#"{"op":"sleep","ms":5000}"#).await;
    stats_until(&first, "kit", "the handler running", |s| s.in_flight == 1).await;
    // A rolling deploy: the grace period ends with the handler still on
    // the message's only allowed delivery.
    let stopped = first.stop().await;
    assert_eq!(stopped.subscribers[0].naked, 1, "{stopped:?}");

    let second = Running::start(&file).await;
    let dl = dead_letter(&js, 1).await;
    assert!(
        header(&dl, "Natsapp-Reason")
            .starts_with("max_deliver (1) reached: delivery 1 did not finish"),
        "{:?}",
        dl.headers
    );
    assert_eq!(header(&dl, "Natsapp-Delivered"), "2");
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&second, "kit").await;
    assert_eq!(
        (
            s.received,
            s.past_max_deliver,
            s.dead_lettered,
            s.latency.count
        ),
        (1, 1, 1, 0),
        "settled without running the handler: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_nak_on_the_last_delivery_is_dead_lettered() {
    let kit = Kit::start(with_dlq(
        "consumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"",
    ))
    .await;
    js_publish(&kit.js, "in.kit", r#"{"op":"nak"}"#).await;
    let dl = dead_letter(&kit.js, 1).await;
    assert!(header(&dl, "Natsapp-Reason").starts_with("max_deliver (1) reached"));
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!((s.received, s.settled_by_guest, s.dead_lettered), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_term_writes_a_dead_letter_copy_with_its_reason() {
    let kit = Kit::start(with_dlq("dead_letter = \"dlq.kit\"")).await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"term","reason":"duplicate order 7"}"#,
    )
    .await;
    let dl = dead_letter(&kit.js, 1).await;
    assert_eq!(header(&dl, "Natsapp-Reason"), "duplicate order 7");
    assert_eq!(
        &dl.payload[..],
        br#"{"op":"term","reason":"duplicate order 7"}"#
    );
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.received, s.termed, s.dead_lettered, s.naked),
        (1, 1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_too_large_to_store_keeps_its_headers_and_says_so() {
    let kit = Kit::start(with_dlq("dead_letter = \"dlq.kit\"")).await;
    let max = kit.client.server_info().max_payload;
    // The input fits with its own header; its copy, with the runtime's
    // headers added, does not.
    let prefix = r#"{"op":"reject","reason":"too big","pad":""#;
    let size = max - 100;
    let payload = format!("{prefix}{}\"}}", "x".repeat(size - prefix.len() - 2));
    assert_eq!(payload.len(), size);
    let seq = js_publish_with_headers(&kit.js, "in.kit", &[("X-Trace", "t-9")], &payload).await;
    let dl = dead_letter(&kit.js, 1).await;
    assert!(dl.payload.is_empty());
    assert_eq!(header(&dl, "Natsapp-Reason"), "too big");
    assert_eq!(header(&dl, "Natsapp-Sequence"), seq.to_string());
    assert_eq!(header(&dl, "X-Trace"), "t-9");
    assert!(
        header(&dl, "Natsapp-Omitted").starts_with(&format!("payload of {size} bytes left out"))
    );
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.received, s.dead_lettered, s.dead_letter_trimmed, s.naked),
        (1, 1, 1, 0),
        "stored at once, never retried: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_that_must_be_stored_but_no_stream_captures_are_configuration_errors() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "OTHER".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for (extra, expected) in [
        (
            kit_service("dead_letter = \"nowhere.kit\""),
            "subscribers[0] (\"kit\").dead_letter: no stream on the server captures \"nowhere.kit\"; a publish there would not be stored",
        ),
        (
            kit_service("").replace(
                "[[subscribers]]",
                "[[publishers]]\nsubject = \"elsewhere.x\"\nstream = \"OTHER\"\n\n[[subscribers]]",
            ),
            "publishers[0] (\"elsewhere.x\").stream: no stream on the server captures \"elsewhere.x\" (stream \"OTHER\" does not); a publish there would not be stored",
        ),
    ] {
        let file = ServiceFile::new(&server, &extra);
        let err = match natsapp_wasm::Service::start(file.config()).await {
            Ok(_) => panic!("started although {expected}"),
            Err(e) => e,
        };
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.exit_code(), 2);
    }
}

/// Publishes one message whose first delivery stores `first` and fails,
/// and whose redelivery stores `then`; returns what OUT holds once it is
/// handled.
async fn outputs_after_a_redelivery(first: &[(&str, &str)], then: &[(&str, &str)]) -> Vec<String> {
    let kit = Kit::start(kit_service("consumer = { max_deliver = 2 }")).await;
    let op = serde_json::json!({"op": "outputs", "first": first, "then": then});
    js_publish(&kit.js, "in.kit", op.to_string()).await;
    stats_until(&kit.running, "kit", "acked on the redelivery", |s| {
        s.acked == 1
    })
    .await;
    drained(&kit.js, "IN", "kit").await;
    let n = stream_messages(&kit.js, "OUT").await;
    let stream = kit.js.get_stream("OUT").await.unwrap();
    let mut stored = Vec::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        stored.push(format!(
            "{}={}",
            m.subject,
            String::from_utf8_lossy(&m.payload)
        ));
    }
    stored.sort();
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_published_in_another_order_on_a_redelivery_are_stored_once() {
    let stored = outputs_after_a_redelivery(
        &[("out.a", "1"), ("out.b", "2"), ("out.a", "3")],
        &[("out.a", "3"), ("out.b", "2"), ("out.a", "1")],
    )
    .await;
    assert_eq!(stored, ["out.a=1", "out.a=3", "out.b=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_outputs_in_one_call_are_both_stored_once() {
    let stored = outputs_after_a_redelivery(
        &[("out.a", "1"), ("out.a", "1")],
        &[("out.a", "1"), ("out.a", "1")],
    )
    .await;
    assert_eq!(stored, ["out.a=1", "out.a=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_that_publishes_fewer_outputs_stores_nothing_extra() {
    let stored = outputs_after_a_redelivery(
        &[("out.a", "1"), ("out.b", "2"), ("out.c", "3")],
        &[("out.b", "2")],
    )
    .await;
    assert_eq!(stored, ["out.a=1", "out.b=2", "out.c=3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_its_puback_is_retried_in_place_stored_once_and_not_charged() {
    // PubAcks wait 500 ms; the handler may run 3 s.
    let text = kit_service("limits = { timeout = \"3s\" }").replace(
        "[[subscribers]]",
        "[[publishers]]\nsubject = \"out.slow\"\nstream = \"OUT\"\ntimeout = \"500ms\"\n\n[[subscribers]]",
    );
    let kit = Kit::start(text).await;
    let mut report = subscribe(&kit.client, "testkit.out.publish_retrying").await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"publish_retrying","subject":"out.slow","data":"payment 7","attempts":3,"delay_ms":1000}"#,
    )
    .await;
    // The guest waits 1 s before it publishes: the time to stop the server
    // once its handler runs.
    stats_until(&kit.running, "kit", "the handler running", |s| {
        s.in_flight == 1
    })
    .await;
    // A stalled server: each try is sent and gets no PubAck in time. The
    // host tries again, with the same Nats-Msg-Id, until the server wakes
    // (and reads them all); the guest's one call blocks meanwhile, past
    // its 3 s limit.
    let pid = kit.server.pid() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    stats_until(&kit.running, "kit", "four tries without a PubAck", |s| {
        s.nats_unavailable >= 4
    })
    .await;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let errors = next_json(&mut report, Duration::from_secs(10)).await["errors"].clone();
    assert_eq!(
        errors,
        serde_json::json!([]),
        "the guest's publish succeeded"
    );
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(stream_messages(&kit.js, "OUT").await, 1, "stored once");
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!((s.received, s.acked, s.naked), (1, 1, 0), "{s:?}");
    assert_eq!(s.publish_failures, 0, "{s:?}");
    assert!(
        s.failed.iter().all(|(_, n)| *n == 0),
        "the wait was not charged to the time limit: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_timeout_lengthened_by_a_reload_is_waited_in_full() {
    // Started with a 1 s PubAck wait on svc.slow, then reloaded with 40 s:
    // longer than the 30 s the service started with as its longest.
    let publisher = |wait: &str| {
        kit_service("consumer = { ack_wait = \"60s\" }").replace(
            "[[subscribers]]",
            &format!("[[publishers]]\nsubject = \"svc.slow\"\nstream = \"SLOW\"\ntimeout = \"{wait}\"\n\n[[subscribers]]"),
        )
    };
    let server = NatsServer::start();
    let (client, js) = (server.client().await, server.jetstream().await);
    // A stream that stores what it is sent and sends no PubAck.
    let slow = async_nats::jetstream::stream::Config {
        name: "SLOW".into(),
        subjects: vec!["svc.slow".into()],
        no_ack: true,
        ..Default::default()
    };
    js.create_stream(slow.clone()).await.unwrap();
    let file = ServiceFile::new(&server, &publisher("1s"));
    let running = Running::start(&file).await;
    file.write(&server, "service.toml", &publisher("40s"));
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.replaced, ["kit"], "{summary:?}");
    let mut report = subscribe(&client, "testkit.out.publish_retrying").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish_retrying","subject":"svc.slow","data":"payment 8","attempts":1,"delay_ms":0}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "SLOW", 1).await;
    tokio::time::sleep(Duration::from_secs(33)).await;
    let waiting = running.subscriber("kit");
    assert_eq!(
        (waiting.in_flight, waiting.nats_unavailable),
        (1, 0),
        "the publish is still waiting for its PubAck past 30 s: {waiting:?}"
    );
    // PubAcks from now on: the try after 40 s is answered (a duplicate).
    js.update_stream(async_nats::jetstream::stream::Config {
        no_ack: false,
        ..slow
    })
    .await
    .unwrap();
    let errors = next_json(&mut report, Duration::from_secs(20)).await["errors"].clone();
    assert_eq!(
        errors,
        serde_json::json!([]),
        "the guest's publish succeeded"
    );
    drained(&js, "IN", "kit").await;
    assert_eq!(stream_messages(&js, "SLOW").await, 1, "stored once");
    // The one try after 40 s; the predecessor's open pull may have handed
    // the message back unstarted (a nak) before this one received it.
    let s = settled_stats(&running, "kit").await;
    assert_eq!((s.acked, s.termed, s.nats_unavailable), (1, 0, 1), "{s:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_deleted_while_running_is_recreated_above_its_ack_floor() {
    let kit = Kit::start(kit_service("pull = { timeout = \"1s\" }")).await;
    for _ in 0..5 {
        js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    stats_until(&kit.running, "kit", "five acked", |s| s.acked == 5).await;
    drained(&kit.js, "IN", "kit").await;
    floor_seen(&kit.running, 5).await;

    kit.js
        .get_stream("IN")
        .await
        .unwrap()
        .delete_consumer("kit")
        .await
        .unwrap();
    for _ in 0..3 {
        js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    let s = stats_until(&kit.running, "kit", "eight acked", |s| s.acked == 8).await;
    drained(&kit.js, "IN", "kit").await;
    let s2 = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s2.received, s2.acked, s2.consumer_recreated),
        (8, 8, 1),
        "the acknowledged five were not replayed: {s:?}"
    );
    let info = consumer_info(&kit.js, "IN", "kit").await;
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence { start_sequence: 6 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durables_from_earlier_versions_are_updated_in_place_and_real_differences_refused() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "IN".into(),
            subjects: vec!["in.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // What the Python wrapper (or an earlier runtime) created: max_deliver
    // as written, a server-side backoff, an idle timeout.
    let legacy = consumer::pull::Config {
        durable_name: Some("kit".into()),
        filter_subject: "in.kit".into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 3,
        backoff: vec![Duration::from_secs(1), Duration::from_secs(2)],
        inactive_threshold: Duration::from_secs(3600),
        ..Default::default()
    };
    stream.create_consumer(legacy.clone()).await.unwrap();
    let file = ServiceFile::new(&server, &kit_service("consumer = { max_deliver = 3 }"));
    let running = Running::start(&file).await;
    let info = stream.clone().consumer_info("kit").await.unwrap();
    assert_eq!(info.config.max_deliver, 4);
    assert!(info.config.backoff.is_empty());
    assert!(info.config.inactive_threshold.is_zero());
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    stats_until(&running, "kit", "handled", |s| s.acked == 1).await;
    running.stop().await;

    stream.delete_consumer("kit").await.unwrap();
    stream
        .create_consumer(consumer::pull::Config {
            headers_only: true,
            ..legacy
        })
        .await
        .unwrap();
    let err = match natsapp_wasm::Service::start(file.config()).await {
        Ok(_) => panic!("started on a headers-only durable"),
        Err(e) => e,
    };
    assert!(
        err.to_string()
            .contains("headers_only: the server delivers headers without payloads"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_consumer_is_waited_for_and_reported() {
    let kit = Kit::start(kit_service("pull = { timeout = \"1s\" }")).await;
    let stream = kit.js.get_stream("IN").await.unwrap();
    let until = time_in(Duration::from_secs(60));
    stream.pause_consumer("kit", until).await.unwrap();
    stats_until(&kit.running, "kit", "paused reported", |s| s.paused).await;
    js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        kit.running.subscriber("kit").received,
        0,
        "nothing pulled while paused"
    );
    stream.resume_consumer("kit").await.unwrap();
    stats_until(&kit.running, "kit", "resumed and handled", |s| {
        !s.paused && s.acked == 1
    })
    .await;
}

fn time_in(d: Duration) -> async_nats::datetime::DateTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    async_nats::datetime::DateTime::from_unix_timestamp_nanos((now + d).as_nanos() as i128).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_memory_stream_lost_in_a_server_restart_is_declared_again() {
    let text = kit_service("pull = { timeout = \"1s\" }")
        .replace(
            "subjects = [\"in.>\"]",
            "subjects = [\"in.>\"]\nstorage = \"memory\"",
        )
        .replace(
            "[nats]\n",
            "[nats]\nreconnect_time_wait = \"100ms\"\nmax_reconnect_attempts = -1\n",
        );
    let mut kit = Kit::start(&text).await;
    js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    stats_until(&kit.running, "kit", "handled", |s| s.acked == 1).await;
    kit.server.restart();
    let js = kit.server.jetstream().await;
    // The stream is back once the runtime declares it again.
    eventually(
        Duration::from_secs(30),
        "stream IN declared again",
        || async { js.get_stream("IN").await.ok() },
    )
    .await;
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    let s = stats_until(&kit.running, "kit", "handled after the restart", |s| {
        s.acked == 2
    })
    .await;
    assert!(s.consumer_recreated >= 1, "{s:?}");
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_reconnect_attempts_run_out_the_process_exits_1_with_the_reason() {
    let mut server = NatsServer::start();
    let text = kit_service("").replace(
        "[nats]\n",
        "[nats]\nreconnect_time_wait = \"100ms\"\nmax_reconnect_attempts = 2\n",
    );
    let file = ServiceFile::new(&server, &text);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let mut child = spawn_run(&file, &log, &[]);
    // Running, not only its durable created: stopped while start-up still
    // waits for the server's answer, the process reports that request's
    // failure rather than the connection's end.
    logged(&log, " running ").await;
    server.stop();
    let code = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.ends_with(
            "error: the connection to NATS is closed: nats.max_reconnect_attempts (2) reconnect attempts failed\n"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_that_can_outlast_an_output_streams_duplicate_window_are_warned_about() {
    let server = NatsServer::start();
    // 3 deliveries, the first two running to their 30s limit and waiting
    // a 10s backoff: 1m20s from the first to the last, against a 20s
    // duplicate window on OUT.
    let text = kit_service(r#"consumer = { max_deliver = 3, backoff = ["10s"] }"#).replace(
        "subjects = [\"out.>\"]",
        "subjects = [\"out.>\"]\nduplicate_window = \"20s\"",
    );
    let file = ServiceFile::new(&server, &text);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let mut child = spawn_run(&file, &log, &[]);
    durable_exists(&server.jetstream().await, "IN", "kit").await;
    let line = eventually(Duration::from_secs(10), "the warning", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // A whole line: the runtime may be writing it while it is read.
        text.lines()
            .find(|l| l.contains("duplicate_window") && l.ends_with("stream=OUT"))
            .map(str::to_string)
    })
    .await;
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    assert!(
        line.ends_with("subscriber=kit stream=OUT")
            && line.contains("allows 1m 20s between a message's first and last handled delivery, longer than the stream's duplicate_window of 20s"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_busy_on_every_core_past_ack_wait_keep_their_messages() {
    // ack_wait 1 s: in-progress every 200 ms. Six handlers each keep a CPU
    // busy for 3 s on two worker threads: the signals must still go out in
    // time, or the server delivers the messages again while they run.
    let kit = Kit::start(kit_service(
        "concurrency = 6\nconsumer = { ack_wait = \"1s\" }\nlimits = { timeout = \"20s\" }",
    ))
    .await;
    let mut busy = subscribe(&kit.client, "testkit.out.busy").await;
    for _ in 0..6 {
        js_publish(&kit.js, "in.kit", r#"{"op":"busy","ms":3000}"#).await;
    }
    for _ in 0..6 {
        next_json(&mut busy, Duration::from_secs(30)).await;
    }
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!((s.received, s.acked), (6, 6), "each delivered once: {s:?}");
    assert_eq!(s.redelivered_while_running, 0, "{s:?}");
    let info = consumer_info(&kit.js, "IN", "kit").await;
    assert_eq!(
        info.num_redelivered, 0,
        "the server redelivered none: {info:?}"
    );
    assert_eq!(info.delivered.stream_sequence, 6);
}
