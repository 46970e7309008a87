//! Key-value buckets: granted per subscriber, declared or verified at
//! start, create-if-absent and compare-and-swap with one winner across
//! replicas, values kept across a server restart, and guests that abuse a
//! bucket contained and counted.

use crate::{kit_service, Kit};
use natsapp_wasm::counters::{KvOp, KvOutcome};
use natsapp_wasm_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const BUCKETS: &str = r#"
[[buckets]]
name = "STATE"

[[buckets]]
name = "PRICES"

[[buckets]]
name = "SMALL"
max_bytes = "4KiB"
max_value_size = "1KiB"
"#;

fn service() -> String {
    kit_service(&format!(
        "kv = {{ STATE = \"rw\", PRICES = \"ro\", SMALL = \"rw\" }}\n{BUCKETS}"
    ))
}

/// Sends one `kv` op of `calls` and returns the results.
async fn kv_calls(kit: &Kit, out: &mut async_nats::Subscriber, calls: Value) -> Vec<Value> {
    js_publish(
        &kit.js,
        "in.kit",
        json!({"op": "kv", "calls": calls}).to_string(),
    )
    .await;
    let report = next_json(out, Duration::from_secs(10)).await;
    report.as_array().expect("a list of results").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_buckets_are_read_and_written_and_the_rest_denied() {
    let kit = Kit::start(service()).await;
    let mut out = subscribe(&kit.client, "testkit.out.kv").await;
    let first = kv_calls(
        &kit,
        &mut out,
        json!([
            {"call": "put", "bucket": "STATE", "key": "order.1", "value": "new"},
            {"call": "get", "bucket": "STATE", "key": "order.1"},
            {"call": "create", "bucket": "STATE", "key": "order.1", "value": "again"},
            {"call": "get", "bucket": "STATE", "key": "never.written"},
            {"call": "get", "bucket": "OTHER", "key": "x"},
            {"call": "put", "bucket": "PRICES", "key": "x", "value": "1"},
            {"call": "get", "bucket": "PRICES", "key": "x"},
            {"call": "put", "bucket": "STATE", "key": "a b", "value": "1"},
        ]),
    )
    .await;
    let revision = first[0]["ok"].as_u64().expect("put returns a revision");
    assert_eq!(
        first[1],
        json!({"ok": {"value": "new", "revision": revision}})
    );
    assert_eq!(
        first[2],
        json!({"ok": null}),
        "create on a key with a value writes nothing"
    );
    assert_eq!(first[3], json!({"ok": null}));
    assert_eq!(
        first[4],
        json!({"error": "denied: subscriber \"kit\" is not granted bucket \"OTHER\" (kv = { … } in service.toml)"})
    );
    assert_eq!(
        first[5],
        json!({"error": "denied: subscriber \"kit\" may only read bucket \"PRICES\" (kv = { PRICES = \"ro\" }): put is a write"})
    );
    assert_eq!(
        first[6],
        json!({"ok": null}),
        "a read-only bucket can be read"
    );
    assert_eq!(
        first[7],
        json!({"error": "invalid: \"a b\" is not a key: use letters, digits and - / _ = . (not first or last, not twice in a row)"})
    );

    let second = kv_calls(
        &kit,
        &mut out,
        json!([
            {"call": "update", "bucket": "STATE", "key": "order.1", "value": "stale", "revision": revision + 100},
            {"call": "update", "bucket": "STATE", "key": "order.1", "value": "paid", "revision": revision},
            {"call": "delete", "bucket": "STATE", "key": "order.1"},
            {"call": "get", "bucket": "STATE", "key": "order.1"},
            {"call": "create", "bucket": "STATE", "key": "order.1", "value": "reborn"},
        ]),
    )
    .await;
    assert_eq!(
        second[0],
        json!({"ok": null}),
        "a stale revision writes nothing"
    );
    let paid = second[1]["ok"].as_u64().expect("the right revision writes");
    assert!(paid > revision);
    assert_eq!(second[2], json!({"ok": null}));
    assert_eq!(second[3], json!({"ok": null}), "deleted");
    assert!(
        second[4]["ok"].as_u64().is_some(),
        "create after delete: {}",
        second[4]
    );

    // Another client sees the same bucket.
    let store = kit.js.get_key_value("STATE").await.unwrap();
    assert_eq!(
        store.get("order.1").await.unwrap().as_deref(),
        Some(&b"reborn"[..])
    );
    let prices = kit.js.get_key_value("PRICES").await.unwrap();
    assert_eq!(
        prices.get("x").await.unwrap(),
        None,
        "nothing reached the read-only bucket"
    );

    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(s.acked, 2);
    assert_eq!(
        (
            s.kv(KvOp::Put, KvOutcome::Ok),
            s.kv(KvOp::Put, KvOutcome::Denied)
        ),
        (1, 2)
    );
    assert_eq!(
        (
            s.kv(KvOp::Get, KvOutcome::Ok),
            s.kv(KvOp::Get, KvOutcome::Denied)
        ),
        (4, 1)
    );
    assert_eq!(
        (
            s.kv(KvOp::Create, KvOutcome::Ok),
            s.kv(KvOp::Create, KvOutcome::Conflict)
        ),
        (1, 1)
    );
    assert_eq!(
        (
            s.kv(KvOp::Update, KvOutcome::Ok),
            s.kv(KvOp::Update, KvOutcome::Conflict)
        ),
        (1, 1)
    );
    assert_eq!(s.kv(KvOp::Delete, KvOutcome::Ok), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_has_one_winner_across_two_replicas() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service(&format!(
            "kv = {{ STATE = \"rw\" }}\nconcurrency = 8\n{BUCKETS}"
        )),
    );
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    let js = server.jetstream().await;
    // 150 keys, each in three messages back to back: the replicas handle
    // the copies of one key at the same time.
    let keys = 150;
    for i in 0..keys {
        for copy in 0..3 {
            let op = json!({"op": "idempotent", "bucket": "STATE", "key": format!("payment.{i}"),
                            "subject": "out.charged", "data": format!("{i}/{copy}")});
            js.publish("in.kit", op.to_string().into()).await.unwrap();
        }
    }
    js.publish("in.kit", json!({"op": "ok"}).to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    drained(&js, "IN", "kit").await;
    let (sa, sb) = (
        settled_stats(&a, "kit").await,
        settled_stats(&b, "kit").await,
    );
    assert_eq!(sa.acked + sb.acked, 3 * keys + 1);
    assert!(
        sa.acked > 0 && sb.acked > 0,
        "both replicas handled messages: {} and {}",
        sa.acked,
        sb.acked
    );
    let won = sa.kv(KvOp::Create, KvOutcome::Ok) + sb.kv(KvOp::Create, KvOutcome::Ok);
    let lost = sa.kv(KvOp::Create, KvOutcome::Conflict) + sb.kv(KvOp::Create, KvOutcome::Conflict);
    assert_eq!((won, lost), (keys, 2 * keys));
    assert_eq!(
        stream_messages(&js, "OUT").await,
        keys,
        "one output per key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_there_after_a_server_restart() {
    let mut server = NatsServer::start();
    let file = ServiceFile::new(&server, &service());
    let running = Running::start(&file).await;
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut out = subscribe(&client, "testkit.out.kv").await;
    let put = json!({"op": "kv", "calls": [{"call": "put", "bucket": "STATE", "key": "k", "value": "kept"}]});
    js_publish(&js, "in.kit", put.to_string()).await;
    let revision = next_json(&mut out, Duration::from_secs(10)).await[0]["ok"]
        .as_u64()
        .expect("stored");
    drop((out, client, js));

    server.restart();
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut out = subscribe(&client, "testkit.out.kv").await;
    let get = json!({"op": "kv", "calls": [{"call": "get", "bucket": "STATE", "key": "k"}]});
    js.publish("in.kit", get.to_string().into()).await.unwrap();
    let report = next_json(&mut out, Duration::from_secs(30)).await;
    assert_eq!(
        report,
        json!([{"ok": {"value": "kept", "revision": revision}}])
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_filling_its_bucket_is_stopped_by_the_bucket_and_the_quota() {
    let kit = Kit::start(service()).await;
    let mut fill = subscribe(&kit.client, "testkit.out.kv_fill").await;
    let mut out = subscribe(&kit.client, "testkit.out.kv").await;

    // 4 KiB of bucket: the server refuses the write that does not fit.
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"kv_fill","bucket":"SMALL","n":100,"size":512}"#,
    )
    .await;
    let report = next_json(&mut fill, Duration::from_secs(10)).await;
    let stored = report["stored"].as_u64().unwrap();
    assert!((1..8).contains(&stored), "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.starts_with("bucket \"SMALL\": "), "{error}");
    assert!(error.contains("maximum bytes exceeded"), "{error}");

    // A value over max_value_size never leaves the process.
    let big = "v".repeat(2048);
    let results = kv_calls(
        &kit,
        &mut out,
        json!([{"call": "put", "bucket": "SMALL", "key": "big", "value": big}]),
    )
    .await;
    assert_eq!(
        results[0],
        json!({"error": "invalid: a value of 2048 bytes is larger than bucket \"SMALL\" accepts (1024 bytes)"})
    );

    // Writes count against publishes_per_message (1000 by default): the
    // 1001st write is refused, and so is the report after it, which the
    // handler turns into a reject.
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"kv_fill","bucket":"STATE","n":5000,"size":1}"#,
    )
    .await;
    drained(&kit.js, "IN", "kit").await;
    let state = kit.js.get_key_value("STATE").await.unwrap();
    assert!(state.get("fill.999").await.unwrap().is_some());
    assert_eq!(state.get("fill.1000").await.unwrap(), None);

    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.acked, s.rejected),
        (2, 1),
        "every message settled, the runtime unharmed"
    );
    assert_eq!(
        s.kv(KvOp::Put, KvOutcome::Failed),
        1,
        "the write past max_bytes"
    );
    assert_eq!(
        s.kv(KvOp::Put, KvOutcome::Denied),
        2,
        "the value too large, the write past the quota"
    );
    assert_eq!(s.kv(KvOp::Put, KvOutcome::Ok), stored + 1000);
    assert_eq!(
        s.quota_refused, 2,
        "the 1001st write and the report after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_must_exist_or_be_declared_and_match_the_file() {
    let server = NatsServer::start();
    let missing = ServiceFile::new(&server, &kit_service("kv = { NOPE = \"ro\" }"));
    let err = natsapp_wasm::Service::start(missing.config())
        .await
        .err()
        .expect("a bucket that is not there");
    assert_eq!(
        err.to_string(),
        "bucket \"NOPE\" (granted to subscriber \"kit\") is neither declared in [[buckets]] nor present on the server"
    );

    let js = server.jetstream().await;
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "STATE".into(),
        history: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let differs = ServiceFile::new(
        &server,
        &kit_service(
            "kv = { STATE = \"rw\" }\n[[buckets]]\nname = \"STATE\"\nmax_bytes = \"1MiB\"",
        ),
    );
    let err = natsapp_wasm::Service::start(differs.config())
        .await
        .err()
        .expect("a bucket that differs");
    assert_eq!(
        err.to_string(),
        "bucket \"STATE\" on the server differs from [[buckets]] in the file: history: server has 5, file says 1; max_bytes: server has -1, file says 1048576; change the file or the bucket (the runtime never changes it)"
    );

    // Listed without declare, or not listed at all: used as it is.
    let existing = ServiceFile::new(&server, &kit_service("kv = { STATE = \"ro\" }"));
    let running = Running::start(&existing).await;
    assert_eq!(running.subscriber("kit").not_running, None);
}

#[test]
fn grants_are_checked_against_the_tenant_and_shown_by_check() {
    let (_dir, path) = acme_service(
        r#"kv = { ACME_STATE = "rw", ACME_PRICES = "ro" }"#,
        r#"kv = { ACME_STATE = "rw", ACME_PRICES = "rw", BETA_STATE = "ro", "bad.name" = "ro" }"#,
    );
    let err = natsapp_wasm::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    for expected in [
        "subscribers[0] (\"charge\").kv: \"bad.name\" is not a bucket name: use letters, digits, '-' and '_'",
        "subscribers[0] (\"charge\").kv: bucket \"ACME_PRICES\" is granted \"rw\" but tenant \"acme\"'s grants.kv allows only \"ro\"",
        "subscribers[0] (\"charge\").kv: bucket \"BETA_STATE\" is outside tenant \"acme\"'s grants.kv (ACME_PRICES, ACME_STATE)",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in\n{err}");
    }

    let (_dir, path) = acme_service(
        r#"kv = { ACME_STATE = "rw", ACME_PRICES = "ro" }"#,
        r#"kv = { ACME_STATE = "rw", ACME_PRICES = "ro" }"#,
    );
    let config = natsapp_wasm::config::Config::load(&path).unwrap();
    let plan = natsapp_wasm::check(&config).unwrap().to_string();
    assert!(
        plan.contains("    key-value buckets: ACME_PRICES (ro), ACME_STATE (rw)\n"),
        "{plan}"
    );
    assert!(
        plan.contains("    imports: natsapp:handler/keyvalue@0.1.3, natsapp:handler/publisher@0.1.3, natsapp:handler/types@0.1.3, wasi:config/store@0.2.0-rc.1, ")
            && plan.contains(" WASI 0.2 interfaces (no files, network or environment)\n"),
        "{plan}"
    );
}
