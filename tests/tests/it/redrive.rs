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

    // A subscriber the file does not have is named.
    let out = Command::new(natsapp_bin())
        .args([
            "redrive",
            file.path().to_str().unwrap(),
            "--subscriber",
            "nobody",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} has no subscriber \"nobody\"",
            file.path().display()
        )
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_dead_letters_move_in_its_own_account() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let acme = crate::jetstream_as(&server, "acme").await;
    for (name, subject) in [("ACME_IN", "acme.in"), ("ACME_DLQ", "acme.dlq")] {
        acme.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let service = |timeout: &str| {
        format!(
            r#"
[service]
name = "platform"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]
user = "svc"
password = "svc"

[[tenants]]
name = "acme"
nats = {{ user = "acme", password = "acme" }}

[[streams]]
name = "ACME_IN"
subjects = ["acme.in"]
declare = false

[[subscribers]]
name = "acme-kit"
tenant = "acme"
component = "{{testkit}}"
subject = "acme.in"
stream = "ACME_IN"
durable = "kit"
consumer = {{ max_deliver = 1 }}
dead_letter = "acme.dlq"
publish = ["testkit.out.>"]
limits = {{ timeout = "{timeout}" }}
"#
        )
    };
    let file = ServiceFile::new(&server, &service("50ms"));
    let running = Running::start(&file).await;
    for i in 0..20 {
        js_publish(
            &acme,
            "acme.in",
            format!(r#"{{"op":"sleep","ms":300,"i":{i}}}"#),
        )
        .await;
    }
    stream_has(&acme, "ACME_DLQ", 20).await;
    running.stop().await;
    file.write(&server, "service.toml", &service("10s"));

    // The platform's identity cannot see acme's streams; the redrive
    // moves them as acme.
    let out = succeeds(Command::new(natsapp_bin()).args([
        "redrive",
        file.path().to_str().unwrap(),
        "--subscriber",
        "acme-kit",
    ]));
    assert_eq!(
        lines(&out).last().map(String::as_str),
        Some("20 dead letters of acme-kit redriven")
    );
    assert_eq!(stream_messages(&acme, "ACME_DLQ").await, 0);
    assert_eq!(stream_messages(&acme, "ACME_IN").await, 40);
    let platform = crate::jetstream_as(&server, "svc").await;
    assert!(platform.get_stream("ACME_IN").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_while_the_handler_still_fails_ends_and_counts_on() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let file = dead_letters(&server).await;
    // Not fixed after all: every copy is dead-lettered again while the
    // redrive runs. It moves those there when it started, and ends.
    file.write(&server, "service.toml", &service("50ms"));
    let running = Running::start(&file).await;
    let out = succeeds(&mut redrive(&file, &[]));
    assert_eq!(
        lines(&out).last().map(String::as_str),
        Some("200 dead letters of kit redriven")
    );
    let stats = stats_until(&running, "kit", "the copies dead-lettered again", |s| {
        s.dead_lettered == 200 && s.in_flight == 0
    })
    .await;
    assert_eq!(stats.redriven, 200, "{stats:?}");
    stream_has(&js, "DLQ", 200).await;
    let dlq = js.get_stream("DLQ").await.unwrap();
    let again = dlq
        .get_first_raw_message_by_subject("dlq.kit", 1)
        .await
        .unwrap();
    assert_eq!(
        again.headers.get("Natsapp-Redriven").map(|v| v.as_str()),
        Some("1"),
        "a dead letter of a redriven copy keeps its count"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_that_forgets_what_is_acknowledged_is_refused() {
    let server = NatsServer::start();
    let text = service("50ms").replace(
        "subjects = [\"dlq.>\"]",
        "subjects = [\"dlq.>\"]\nretention = \"interest\"",
    );
    let file = ServiceFile::new(&server, &text);
    Running::start(&file).await.stop().await;
    let out = redrive(&file, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: stream DLQ keeps messages only until they are acknowledged (Interest retention): \
         the redrive's progress would remove the dead letters it leaves; give dead letters a \
         stream with limits retention"
    );
}
