//! `natsapp-wasm redrive`: a subscriber's dead letters put back on their
//! original subject once its handler is fixed — each handled once, also
//! when a redrive is killed halfway and run again after the original
//! stream's duplicate window has passed.

use nats_test_server::NatsProxy;
use natsapp_wasm_tests::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const MESSAGES: u64 = 200;

/// The kit subscriber with no retry, a dead-letter subject and a time
/// limit of `timeout`: each message sleeps 300 ms, so 50ms dead-letters
/// every one and 10s (the fix) handles them.
fn service(timeout: &str) -> String {
    format!(
        r#"
[service]
name = "redrive-kit"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]

[[streams]]
name = "IN"
subjects = ["in.>"]
duplicate_window = "1s"

[[streams]]
name = "DLQ"
subjects = ["dlq.>"]

[[subscribers]]
name = "kit"
component = "{{testkit}}"
subject = "in.kit"
stream = "IN"
durable = "kit"
concurrency = 100
consumer = {{ max_deliver = 1 }}
dead_letter = "dlq.kit"
publish = ["testkit.out.>"]
limits = {{ timeout = "{timeout}" }}
"#
    )
}

/// `MESSAGES` dead letters of kit, its handler since fixed in `file`.
async fn dead_letters(server: &NatsServer) -> ServiceFile {
    let file = ServiceFile::new(server, &service("50ms"));
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    for i in 0..MESSAGES {
        js_publish(
            &js,
            "in.kit",
            format!(r#"{{"op":"sleep","ms":300,"i":{i}}}"#),
        )
        .await;
    }
    stream_has(&js, "DLQ", MESSAGES).await;
    running.stop().await;
    file.write(server, "service.toml", &service("10s"));
    file
}

fn redrive(file: &ServiceFile, extra: &[&str]) -> Command {
    let mut cmd = Command::new(natsapp_bin());
    cmd.args([
        "redrive",
        file.path().to_str().unwrap(),
        "--subscriber",
        "kit",
    ])
    .args(extra);
    cmd
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The dead letters each redriven copy in IN names, and how many copies.
async fn redriven_copies(js: &async_nats::jetstream::Context) -> (BTreeSet<String>, usize) {
    let stream = js.get_stream("IN").await.unwrap();
    let (mut from, mut copies) = (BTreeSet::new(), 0);
    for seq in 1..=stream_messages(js, "IN").await {
        let msg = stream.get_raw_message(seq).await.unwrap();
        if let Some(f) = msg.headers.get("Natsapp-Redriven-From") {
            assert_eq!(
                msg.headers.get("Natsapp-Redriven").map(|v| v.as_str()),
                Some("1")
            );
            from.insert(f.as_str().to_string());
            copies += 1;
        }
    }
    (from, copies)
}

/// Starts the fixed service and waits until it has handled every redriven
/// copy; its statistics of kit.
async fn handled_after_fix(
    file: &ServiceFile,
    js: &async_nats::jetstream::Context,
) -> natsapp_wasm::observability::stats::SubscriberSnapshot {
    let running = Running::start(file).await;
    drained(js, "IN", "kit").await;
    let stats = settled_stats(&running, "kit").await;
    running.stop().await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_puts_every_dead_letter_back_once_the_handler_is_fixed() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let file = dead_letters(&server).await;

    // --dry-run lists, with reasons, and moves nothing.
    let out = succeeds(&mut redrive(&file, &["--dry-run", "--limit", "3"]));
    let listed = lines(&out);
    assert_eq!(listed.len(), 4, "{listed:?}");
    // In the dead-letter stream's order; each names where it came from.
    for (line, seq) in listed[..3].iter().zip(1..) {
        assert!(
            line.starts_with(&format!("would move dead letter {seq} (in.kit from IN "))
                && line.contains("; timeout: "),
            "{line}"
        );
    }
    assert_eq!(listed[3], "3 dead letters of kit would move");
    let out = succeeds(&mut redrive(
        &file,
        &["--dry-run", "--reason", "no such reason"],
    ));
    assert_eq!(lines(&out), ["0 dead letters of kit would move"]);
    assert_eq!(stream_messages(&js, "DLQ").await, MESSAGES);

    let out = succeeds(&mut redrive(&file, &[]));
    let moved = lines(&out);
    assert_eq!(
        moved.last().map(String::as_str),
        Some("200 dead letters of kit redriven")
    );
    assert!(
        moved[0].starts_with("moved dead letter 1 (in.kit from IN ")
            && moved[0].contains(" to IN "),
        "{}",
        moved[0]
    );
    assert_eq!(
        stream_messages(&js, "DLQ").await,
        0,
        "every dead letter removed"
    );
    let (from, copies) = redriven_copies(&js).await;
    assert_eq!((from.len(), copies), (200, 200));

    let stats = handled_after_fix(&file, &js).await;
    assert_eq!((stats.acked, stats.redriven), (200, 200), "{stats:?}");
    // The redrive's own consumer is gone.
    let dlq = js.get_stream("DLQ").await.unwrap();
    assert!(dlq.consumer_info("natsapp-redrive-kit").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_killed_halfway_and_run_again_moves_each_dead_letter_once() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let file = dead_letters(&server).await;

    // The redrive reaches the server through a proxy. Halfway, the proxy
    // passes one more redriven copy and then lets nothing back: the copy
    // is stored, its PubAck never heard, its dead letter not yet removed —
    // and there the redrive is killed.
    let proxy = NatsProxy::start(server.url()).await;
    let mut first = redrive(&file, &[])
        .env("NATS_SERVERS", proxy.url())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(first.stdout.take().unwrap());
    let mut seen = 0;
    for line in stdout.lines() {
        if line.unwrap().starts_with("moved dead letter") {
            seen += 1;
            if seen == 100 {
                proxy.deafen_after_publish_to("in.kit");
                break;
            }
        }
    }
    assert_eq!(seen, 100, "the redrive ended early: {:?}", first.wait());
    eventually(
        Duration::from_secs(10),
        "the next copy published",
        || async { proxy.deaf().then_some(()) },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();

    // Past IN's duplicate window: its message ids alone can no longer keep
    // a second copy out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let left = stream_messages(&js, "DLQ").await;
    assert!((1..=100).contains(&left), "{left} dead letters left");
    let out = redrive(&file, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("warning: resuming a redrive of kit that was stopped; dead letters "),
        "{warned}"
    );
    // The copy the killed redrive stored is found, not published again.
    let first_line = lines(&out).into_iter().next().unwrap_or_default();
    assert!(
        first_line.starts_with("removed dead letter ")
            && first_line.ends_with(": a stopped redrive had moved it"),
        "{first_line}"
    );
    assert_eq!(stream_messages(&js, "DLQ").await, 0, "none left");
    let (from, copies) = redriven_copies(&js).await;
    assert_eq!((from.len(), copies), (200, 200), "none twice");

    let stats = handled_after_fix(&file, &js).await;
    assert_eq!((stats.acked, stats.redriven), (200, 200), "{stats:?}");
}
