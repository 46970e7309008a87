//! Guests that reach for what is not theirs: system subjects behind a
//! wildcard allow-list, another subscriber's output ids, the server's
//! `Nats-*` controls. Each is refused inside the guest, nothing reaches
//! the wire, and the message is settled as the README says.

use crate::{kit_service, with_dlq, Kit};
use natsapp_wasm_tests::*;
use std::time::Duration;

/// A kit service whose allow-list is `>`: everything but system subjects.
async fn broad_kit() -> Kit {
    Kit::start(kit_service("").replace(
        "publish = [\"testkit.out.>\", \"out.>\", \"svc.>\"]",
        "publish = [\">\"]",
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_allow_list_does_not_reach_system_subjects() {
    let kit = broad_kit().await;
    let mut denied = subscribe(&kit.client, "testkit.out.denied").await;
    let mut spy = subscribe(&kit.client, "$JS.API.STREAM.DELETE.>").await;
    let cases = [
        ("try_request", "$JS.API.STREAM.DELETE.IN"),
        ("try_publish", "$JS.ACK.IN.kit.1.1.1.1700000000000000000.0"),
        ("try_publish", "$SYS.REQ.SERVER.PING"),
        ("try_request", "$KV.CONFIG.key"),
        ("try_publish", "$O.BUCKET.C.x"),
        ("try_request", "$SRV.PING"),
        ("try_publish", "_INBOX.someone.else"),
    ];
    for (op, subject) in cases {
        js_publish(
            &kit.js,
            "in.kit",
            serde_json::json!({"op": op, "subject": subject}).to_string(),
        )
        .await;
        let report = next_json(&mut denied, Duration::from_secs(10)).await;
        let result = report["result"].as_str().unwrap().to_string();
        assert!(
            result.starts_with(r#"Err("denied: subscriber \"kit\" may not"#)
                && result.contains(&format!("system subject \\\"{subject}\\\""))
                && result.contains("a wildcard never covers"),
            "{subject}: {result}"
        );
    }
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(
        stream_messages(&kit.js, "IN").await,
        cases.len() as u64,
        "IN was not deleted"
    );
    assert!(
        silent(&mut spy, Duration::from_millis(300)).await,
        "nothing reached $JS.API"
    );
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!((s.acked, s.naked, s.termed), (cases.len() as u64, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_forge_another_subscribers_output_ids_or_set_server_controls() {
    let kit = broad_kit().await;
    let mut result = subscribe(&kit.client, "testkit.out.headers").await;
    // An id a neighbour's runtime would give one of its outputs: the guest's
    // id is kept inside its own subscriber's namespace, so it suppresses
    // nothing of theirs.
    let forged = "ORDERS:neighbour:7:0";
    js_publish(
        &kit.js,
        "in.kit",
        serde_json::json!({"op": "publish_with_headers", "subject": "out.x", "data": "mine",
                           "headers": [["Nats-Msg-Id", forged]]})
        .to_string(),
    )
    .await;
    assert_eq!(
        next_json(&mut result, Duration::from_secs(10)).await["result"],
        "Ok(())"
    );
    let stored = natsapp_wasm_tests::stored(&kit.js, "OUT", 1).await;
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("IN:kit:{forged}").as_str())
    );

    for control in [
        "Nats-Rollup",
        "Nats-Schedule",
        "Nats-Expected-Last-Sequence",
    ] {
        js_publish(
            &kit.js,
            "in.kit",
            serde_json::json!({"op": "publish_with_headers", "subject": "out.x", "data": "x",
                               "headers": [[control, "1"]]})
            .to_string(),
        )
        .await;
        let r = next_json(&mut result, Duration::from_secs(10)).await["result"].clone();
        assert!(
            r.as_str()
                .unwrap()
                .contains(&format!("denied: header \\\"{control}\\\" is reserved")),
            "{control}: {r}"
        );
    }
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(
        stream_messages(&kit.js, "OUT").await,
        1,
        "no control header reached the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reply_path_is_open_whatever_the_allow_list() {
    let kit = Kit::start(kit_service("").replace(
        "publish = [\"testkit.out.>\", \"out.>\", \"svc.>\"]",
        "publish = []",
    ))
    .await;
    let inbox = kit.client.new_inbox();
    let mut answers = subscribe(&kit.client, &inbox).await;
    js_publish_with_headers(
        &kit.js,
        "in.kit",
        &[("Reply-To", inbox.as_str())],
        r#"{"op":"reply","data":"pong"}"#,
    )
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut answers),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    assert_eq!(&answer.payload[..], b"pong");
    drained(&kit.js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_max_payload_is_invalid_not_retried() {
    let kit = broad_kit().await;
    let mut denied = subscribe(&kit.client, "testkit.out.denied").await;
    let size = kit.client.server_info().max_payload + 1;
    for subject in ["svc.core", "out.stored"] {
        js_publish(
            &kit.js,
            "in.kit",
            serde_json::json!({"op": "try_publish_bytes", "subject": subject, "size": size})
                .to_string(),
        )
        .await;
        let result = next_json(&mut denied, Duration::from_secs(10)).await["result"].clone();
        assert!(
            result.as_str().unwrap().starts_with(r#"Err("invalid: "#),
            "{subject}: {result}"
        );
    }
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.acked, s.naked),
        (2, 0),
        "handled once each, never retried: {s:?}"
    );
}

/// The kit service (`extra` added to the hostile subscriber) with a
/// well-behaved neighbour subscriber, the Rust no-op, on `in.neighbour`.
async fn with_neighbour(extra: &str) -> Kit {
    Kit::start(kit_service(extra) + NEIGHBOUR).await
}

/// The well-behaved neighbour subscriber.
const NEIGHBOUR: &str = r#"
[[subscribers]]
name = "neighbour"
component = "{noop}"
subject = "in.neighbour"
stream = "IN"
durable = "neighbour"
concurrency = 4
"#;

/// Publishes `n` messages for the neighbour and waits until it acked them all.
async fn neighbour_keeps_handling(kit: &Kit, n: u64) {
    let before = kit.running.subscriber("neighbour").acked;
    for _ in 0..n {
        js_publish(&kit.js, "in.neighbour", "x").await;
    }
    stats_until(
        &kit.running,
        "neighbour",
        "the neighbour handled its messages",
        |s| s.acked == before + n,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_is_a_contained_trap() {
    let kit = with_neighbour("consumer = { max_deliver = 1 }").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"recurse","depth":100000000}"#).await;
    neighbour_keeps_handling(&kit, 20).await;
    let s = stats_until(&kit.running, "kit", "the overflow settled", |s| {
        s.termed == 1 && s.in_flight == 0
    })
    .await;
    assert_eq!(
        (s.failed(natsapp_wasm::message::FailureCause::Trap), s.naked),
        (1, 0),
        "a trap on the last allowed delivery terminates it: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_stops_at_the_per_message_quota() {
    let kit = with_neighbour("").await;
    let mut out = subscribe(&kit.client, "testkit.out.>").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"publish_flood","n":1000000}"#).await;
    js_publish(&kit.js, "in.kit", MARKER).await;
    let received = count_until_marker(&mut out, "testkit.out.flood").await;
    let s = stats_until(&kit.running, "kit", "the flood handled", |s| s.acked == 2).await;
    // The 1001st publish, and the report the guest tries after it.
    assert_eq!(s.quota_refused, 2, "{s:?}");
    assert_eq!(
        received, 1000,
        "publishes_per_message (1000 by default) stopped it"
    );
    neighbour_keeps_handling(&kit, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_lines_is_cut_by_the_output_budget() {
    let kit = with_neighbour("").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"empty_lines","n":200000}"#).await;
    neighbour_keeps_handling(&kit, 20).await;
    stats_until(&kit.running, "kit", "the flood handled", |s| s.acked == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_loop_without_responders_stops_at_the_quota() {
    let kit = with_neighbour("").await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"request_loop","subject":"svc.nobody","n":100000}"#,
    )
    .await;
    neighbour_keeps_handling(&kit, 20).await;
    let s = stats_until(&kit.running, "kit", "the loop handled", |s| s.acked == 1).await;
    assert_eq!(
        s.quota_refused, 99_000,
        "every request past the 1000th was refused: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_never_drops_its_host_resources_hits_the_table_bound() {
    let kit = with_neighbour("consumer = { max_deliver = 1 }").await;
    let mut leaked = subscribe(&kit.client, "testkit.out.leaked").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"leak_resources","n":1000}"#).await;
    assert_eq!(
        next_json(&mut leaked, Duration::from_secs(10)).await["resources"],
        1000,
        "a thousand resources are well within the bound"
    );
    js_publish(&kit.js, "in.kit", r#"{"op":"leak_resources","n":1000000}"#).await;
    neighbour_keeps_handling(&kit, 20).await;
    let s = stats_until(&kit.running, "kit", "the leak settled", |s| {
        s.acked + s.termed == 2 && s.in_flight == 0
    })
    .await;
    assert_eq!(
        (
            s.acked,
            s.termed,
            s.failed(natsapp_wasm::message::FailureCause::Trap)
        ),
        (1, 1, 1),
        "the million-resource guest traps at the table's bound: {s:?}"
    );
    assert!(
        silent(&mut leaked, Duration::from_millis(300)).await,
        "the trapping guest never reported"
    );
}

/// The corpus: what each hostile guest does, and the words the dead-letter
/// copy's `Natsapp-Reason` carries for those that fail. Its guests share
/// one subscriber's guest CPU with the spinner, so the floods are as large
/// as proves their bound (1,024 lines reach the log, 1,000 requests go
/// out), not larger: a million host calls in a fraction of a loaded
/// machine's core would outlast the time limit.
const CORPUS: [(&str, Option<&str>); 8] = [
    (r#"{"op":"spin"}"#, Some("time limit of 10s")),
    (r#"{"op":"alloc","mib":512}"#, Some("memory limit")),
    (
        r#"{"op":"recurse","depth":100000000}"#,
        Some("call stack exhausted"),
    ),
    (r#"{"op":"panic","message":"hostile"}"#, Some("hostile")),
    (
        r#"{"op":"leak_resources","n":1000000}"#,
        Some("resource table has no free keys"),
    ),
    (r#"{"op":"publish_flood","n":1000000}"#, None),
    (r#"{"op":"empty_lines","n":100000}"#, None),
    (
        r#"{"op":"request_loop","subject":"svc.nobody","n":10000}"#,
        None,
    ),
];

/// The most memory the process may hold at its peak with the whole corpus
/// in flight (about 56 MiB here): the engine, one memory bomb at its 64 MiB
/// default limit, the rest small. Buffering the flood's million publishes
/// or the million lines on the host would go far past it.
const PEAK_RSS_LIMIT_MIB: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_corpus_at_once_leaves_the_process_up_bounded_and_serving() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &(with_dlq(
            "concurrency = 8\nconsumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"\nlimits = { timeout = \"10s\" }",
        ) + NEIGHBOUR),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[]);
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    durable_exists(&js, "IN", "neighbour").await;
    for (op, _) in CORPUS {
        js_publish(&js, "in.kit", op).await;
    }
    for _ in 0..200 {
        js_publish(&js, "in.neighbour", "x").await;
    }
    drained(&js, "IN", "neighbour").await;
    drained(&js, "IN", "kit").await;
    let failing: Vec<&str> = CORPUS.iter().filter_map(|(_, reason)| *reason).collect();
    let copies = eventually(
        Duration::from_secs(30),
        "the dead-letter copies",
        || async {
            let n = stream_messages(&js, "DLQ").await;
            (n >= failing.len() as u64).then_some(n)
        },
    )
    .await;
    let dlq = js.get_stream("DLQ").await.unwrap();
    let mut reasons = Vec::new();
    for seq in 1..=copies {
        let copy = dlq.get_raw_message(seq).await.unwrap();
        reasons.push(crate::header(&copy, "Natsapp-Reason").to_string());
    }
    assert_eq!(reasons.len(), failing.len(), "{reasons:#?}");
    for words in &failing {
        assert!(
            reasons.iter().any(|r| r.contains(words)),
            "no dead-letter reason mentions {words:?}: {reasons:#?} ({} in DLQ)",
            stream_messages(&js, "DLQ").await
        );
    }
    let peak_mib = peak_rss_mib(child.id());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the runtime stayed up through the corpus"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);
    assert!(
        peak_mib < PEAK_RSS_LIMIT_MIB,
        "peak RSS {peak_mib} MiB with the corpus in flight (limit {PEAK_RSS_LIMIT_MIB} MiB)"
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    let stats_of = |name: &str| {
        text.lines()
            .rev()
            .find(|l| l.contains(&format!("subscriber={name}")) && l.contains("received="))
            .unwrap_or_else(|| panic!("no statistics for {name} in:\n{text}"))
            .to_string()
    };
    let kit = stats_of("kit");
    for counted in [
        "received=8 acked=3 naked=0 termed=5 dead_lettered=5",
        "timeout=1",
        "memory_limit=1",
        "trap=2",
        "panic=1",
    ] {
        assert!(kit.contains(counted), "{counted:?} not in {kit}");
    }
    assert!(
        stats_of("neighbour").contains("received=200 acked=200 naked=0 termed=0"),
        "{}",
        stats_of("neighbour")
    );
}

/// The highest resident set of process `pid` so far, in MiB (`VmHWM`).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib / 1024
}
