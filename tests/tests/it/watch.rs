//! Key-value triggers: a subscriber with `watch = { kv, keys, start }`
//! handles the changes of a bucket's keys on a durable of the bucket's
//! stream, and every SDK tells the key, the operation and the revision.

use crate::{dead_letter, header};
use natsapp_wasm_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A service whose subscriber `kit` runs `component` on the changes of
/// `PRICES`' keys `sku.>`; `extra` goes into the subscriber.
fn service(component: &str, extra: &str) -> String {
    format!(
        r#"
[service]
name = "watch-service"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]

[[buckets]]
name = "PRICES"
history = 5

[[streams]]
name = "DLQ"
subjects = ["dlq.>"]

[[subscribers]]
name = "kit"
component = "{component}"
durable = "kit"
kv = {{ PRICES = "ro" }}
publish = ["testkit.out.>"]
{extra}
"#
    )
}

/// The next change the kit reports.
async fn next_change(out: &mut async_nats::Subscriber) -> Value {
    next_json(out, Duration::from_secs(30)).await
}

fn change(key: &str, operation: &str, revision: u64) -> Value {
    json!({"key": key, "operation": operation, "revision": revision})
}

async fn sees_put_delete_and_purge_of_its_keys(component: &str) {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &service(component, r#"watch = { kv = "PRICES", keys = "sku.>" }"#),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut out = subscribe(&client, "testkit.out.kvchange").await;
    let prices = js.get_key_value("PRICES").await.unwrap();

    // Each change is awaited before the next: a purge removes the key's
    // earlier values from the stream, handled or not.
    assert_eq!(prices.put("sku.1", "".into()).await.unwrap(), 1);
    assert_eq!(next_change(&mut out).await, change("sku.1", "put", 1));
    assert_eq!(prices.put("other.1", "".into()).await.unwrap(), 2);
    assert_eq!(prices.put("sku.2", "".into()).await.unwrap(), 3);
    // The next change reported is sku.2's: other.1 is not a key it watches.
    assert_eq!(next_change(&mut out).await, change("sku.2", "put", 3));
    prices.delete("sku.1").await.unwrap();
    assert_eq!(next_change(&mut out).await, change("sku.1", "delete", 4));
    prices.purge("sku.2").await.unwrap();
    assert_eq!(next_change(&mut out).await, change("sku.2", "purge", 5));
    drained(&js, "KV_PRICES", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!((s.received, s.acked), (4, 4), "{component}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_watch_sees_put_delete_and_purge_of_its_keys_only() {
    sees_put_delete_and_purge_of_its_keys(guests::TESTKIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_watch_sees_put_delete_and_purge_of_its_keys_only() {
    sees_put_delete_and_purge_of_its_keys(guests::PY_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_watch_sees_put_delete_and_purge_of_its_keys_only() {
    sees_put_delete_and_purge_of_its_keys(guests::JS_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_watch_sees_put_delete_and_purge_of_its_keys_only() {
    sees_put_delete_and_purge_of_its_keys(guests::C_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_last_delivers_each_keys_latest_value_once_then_changes() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let prices = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "PRICES".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    for (key, seq) in [("sku.1", 1), ("sku.1", 2), ("other.1", 3), ("sku.2", 4)] {
        assert_eq!(prices.put(key, "".into()).await.unwrap(), seq);
    }
    let file = ServiceFile::new(
        &server,
        &service(
            guests::TESTKIT,
            r#"watch = { kv = "PRICES", keys = "sku.>", start = "last" }"#,
        ),
    );
    let client = server.client().await;
    let mut out = subscribe(&client, "testkit.out.kvchange").await;
    let running = Running::start(&file).await;
    assert_eq!(next_change(&mut out).await, change("sku.1", "put", 2));
    assert_eq!(next_change(&mut out).await, change("sku.2", "put", 4));
    prices.put("sku.3", "".into()).await.unwrap();
    assert_eq!(next_change(&mut out).await, change("sku.3", "put", 5));
    drained(&js, "KV_PRICES", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        s.received, 3,
        "sku.1's latest value (revision 2, not 1), sku.2's (4), then sku.3 (5)"
    );
    let info = js
        .get_stream("KV_PRICES")
        .await
        .unwrap()
        .consumer_info("kit")
        .await
        .unwrap();
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::LastPerSubject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_handler_retries_then_dead_letters_like_a_stream_subscriber() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &service(
            guests::TESTKIT,
            "watch = { kv = \"PRICES\", keys = \"sku.>\" }\n\
             consumer = { max_deliver = 2 }\ndead_letter = \"dlq.prices\"",
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    let prices = js.get_key_value("PRICES").await.unwrap();
    prices
        .put("sku.bad", r#"{"op":"retry","delay_ms":10}"#.into())
        .await
        .unwrap();
    prices
        .put("sku.good", r#"{"op":"ok"}"#.into())
        .await
        .unwrap();

    stream_has(&js, "DLQ", 1).await;
    let letter = dead_letter(&js, 1).await;
    assert_eq!(header(&letter, "Natsapp-Subject"), "$KV.PRICES.sku.bad");
    assert_eq!(
        header(&letter, "Natsapp-Reason"),
        "max_deliver (2) reached; last failure: asked to retry"
    );
    drained(&js, "KV_PRICES", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        (s.received, s.retried, s.dead_lettered, s.acked),
        (3, 2, 1, 1),
        "sku.bad twice, each asking to retry, the second past max_deliver and dead-lettered; sku.good once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_a_bucket_that_is_not_there_is_refused_naming_it() {
    let server = NatsServer::start();
    let text = service(guests::TESTKIT, r#"watch = { kv = "MISSING" }"#)
        .replace("kv = { PRICES = \"ro\" }", "kv = { MISSING = \"ro\" }");
    let file = ServiceFile::new(&server, &text);
    let Err(e) = natsapp_wasm::Service::start(file.config()).await else {
        panic!("a watch of a missing bucket started");
    };
    let err = natsapp_wasm::error::ErrorChain(&e).to_string();
    assert!(
        err.contains(
            "bucket \"MISSING\" (granted to subscriber \"kit\") is neither declared in [[buckets]] nor present on the server"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_watch_sees_its_own_accounts_bucket_only() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let file = ServiceFile::new(
        &server,
        &format!(
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
grants = {{ kv = {{ PRICES = "ro" }}, publish = ["testkit.out.>"] }}

# Declared by the platform, created in the account of the subscriber
# granted it.
[[buckets]]
name = "PRICES"

[[subscribers]]
name = "acme-watch"
tenant = "acme"
component = "{}"
watch = {{ kv = "PRICES" }}
durable = "watch"
kv = {{ PRICES = "ro" }}
publish = ["testkit.out.>"]
"#,
            guests::TESTKIT
        ),
    );
    let running = Running::start(&file).await;
    let acme = crate::jetstream_as(&server, "acme").await;
    let beta = crate::jetstream_as(&server, "beta").await;
    let mut out = subscribe(&acme.client(), "testkit.out.kvchange").await;
    let beta_prices = beta
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "PRICES".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    beta_prices.put("beta.sku", "".into()).await.unwrap();
    let acme_prices = acme.get_key_value("PRICES").await.unwrap();
    acme_prices.put("acme.sku", "".into()).await.unwrap();
    assert_eq!(
        next_change(&mut out).await,
        change("acme.sku", "put", 1),
        "beta's bucket of the same name is another account's"
    );
    drained(&acme, "KV_PRICES", "watch").await;
    let s = settled_stats(&running, "acme-watch").await;
    assert_eq!((s.tenant.as_deref(), s.received), (Some("acme"), 1));
}

#[test]
fn check_and_docs_show_what_a_watch_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.toml");
    let text = service(
        guests::TESTKIT,
        r#"watch = { kv = "PRICES", keys = "sku.>", start = "last" }"#,
    )
    .replace("{url}", "nats://127.0.0.1:4222");
    std::fs::write(&path, text).unwrap();
    let run = |verb: &str| {
        let out = succeeds(
            std::process::Command::new(natsapp_bin()).args([verb, path.to_str().unwrap()]),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let plan = run("check");
    assert!(
        plan.lines().any(|l| l
            == "  kit: changes of keys sku.> of bucket PRICES (start last, stream KV_PRICES), durable kit"),
        "{plan}"
    );
    let doc: Value = serde_json::from_str(&run("docs")).unwrap();
    let described = doc["operations"]["kit"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        described.contains(
            "on stream KV_PRICES (the changes of keys sku.> of bucket PRICES, from last)"
        ),
        "{doc:#}"
    );
}

/// A service file for `service(TESTKIT, extra)`, written with a server
/// address nothing listens on: for the verbs that need no server.
fn offline_file(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.toml");
    let text = service(guests::TESTKIT, extra).replace("{url}", "nats://127.0.0.1:1");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn invoke_runs_a_watch_handler_on_a_change_without_a_server() {
    let (_dir, path) = offline_file(r#"watch = { kv = "PRICES", keys = "sku.>" }"#);
    let out = std::process::Command::new(natsapp_bin())
        .args(["invoke", path.to_str().unwrap(), "", "-s", "kit"])
        .args([
            "--subject",
            "$KV.PRICES.sku.7",
            "-H",
            "KV-Operation=DEL",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let change: Value = report["published"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["subject"] == "testkit.out.kvchange")
        .map(|p| serde_json::from_str(p["payload"].as_str().unwrap()).unwrap())
        .unwrap_or_else(|| panic!("no change reported: {report:#}"));
    assert_eq!(change["key"], "sku.7");
    assert_eq!(change["operation"], "delete");
}

#[test]
fn redrive_refuses_a_watchs_dead_letters() {
    let (_dir, path) = offline_file("watch = { kv = \"PRICES\" }\ndead_letter = \"dlq.prices\"");
    let out = std::process::Command::new(natsapp_bin())
        .args(["redrive", path.to_str().unwrap(), "--subscriber", "kit"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "subscriber \"kit\" watches bucket \"PRICES\": putting its dead letters back would write old values and deletes into the bucket over newer ones"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchs_durable_stays_where_it_is_when_start_changes() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let watch = |start: &str| {
        service(
            guests::TESTKIT,
            &format!("watch = {{ kv = \"PRICES\", start = \"{start}\" }}"),
        )
    };
    let file = ServiceFile::new(&server, &watch("new"));
    Running::start(&file).await.stop().await;
    let prices = js.get_key_value("PRICES").await.unwrap();
    prices.put("sku.1", "".into()).await.unwrap();
    file.write(&server, "service.toml", &watch("last"));
    let client = server.client().await;
    let mut out = subscribe(&client, "testkit.out.kvchange").await;
    let running = Running::start(&file).await;
    assert_eq!(
        next_change(&mut out).await,
        change("sku.1", "put", 1),
        "the change made while it was stopped"
    );
    drained(&js, "KV_PRICES", "kit").await;
    assert_eq!(settled_stats(&running, "kit").await.received, 1);
    let info = consumer_info(&js, "KV_PRICES", "kit").await;
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::New
    );
}
