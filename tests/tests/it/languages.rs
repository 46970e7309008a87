//! The Python, JavaScript and C SDKs keep the same semantics as the Rust one.

use crate::{header, kit_service, with_dlq, Kit};
use natsapp_wasm_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_semantics() {
    sdk_semantics(guests::PY_KIT, "ValueError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sdk_semantics() {
    sdk_semantics(guests::JS_KIT, "TypeError").await;
}

/// C has no exceptions: the kit calls natsapp_crash("error: …") where the
/// others raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_sdk_semantics() {
    sdk_semantics(guests::C_KIT, "error").await;
}

async fn sdk_semantics(component: &str, exception: &str) {
    let text = with_dlq(
        "consumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"\nconfig = { region = \"eu\" }",
    );
    let kit = Kit::start(text.replace("{testkit}", component)).await;
    let mut published = subscribe(&kit.client, "testkit.out.publish").await;
    let mut info = subscribe(&kit.client, "testkit.out.info").await;
    let js = &kit.js;
    js_publish(js, "in.kit", r#"{"op":"raise","message":"bad value 42"}"#).await;
    js_publish(
        js,
        "in.kit",
        r#"{"op":"reject","reason":"order 7 is invalid"}"#,
    )
    .await;
    js_publish(js, "in.kit", r#"{"op":"retry","delay_ms":100}"#).await;
    js_publish(js, "in.kit", r#"{"op":"denied","subject":"forbidden.x"}"#).await;
    js_publish(
        js,
        "in.kit",
        r#"{"op":"publish","subject":"out.x","data":{"a":1}}"#,
    )
    .await;
    js_publish(js, "in.kit", r#"{"op":"ack"}"#).await;
    js_publish_with_headers(js, "in.kit", &[("X-Trace", "t-9")], r#"{"op":"info"}"#).await;

    assert_eq!(
        next_json(&mut published, Duration::from_secs(20)).await,
        serde_json::json!({"stream": "OUT", "sequence": 1, "duplicate": false})
    );
    assert_eq!(
        next_json(&mut info, Duration::from_secs(20)).await,
        serde_json::json!({"subject": "in.kit", "trace": "t-9", "delivered": 1, "stream": "IN", "region": "eu", "data": {"op": "info"}})
    );
    stream_has(js, "DLQ", 4).await;
    let dlq = js.get_stream("DLQ").await.unwrap();
    let mut reasons = Vec::new();
    for seq in 1..=4 {
        reasons
            .push(header(&dlq.get_raw_message(seq).await.unwrap(), "Natsapp-Reason").to_string());
    }
    reasons.sort();
    let mut expected = vec![
            "denied: subscriber \"kit\" may not publish to \"forbidden.x\" (allowed: testkit.out.>, out.>, svc.>)".to_string(),
            "max_deliver (1) reached; last failure: asked to retry".to_string(),
            format!("max_deliver (1) reached; last failure: uncaught exception: {exception}: bad value 42"),
            "order 7 is invalid".to_string(),
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    drained(js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (
            s.received,
            s.acked,
            s.settled_by_guest,
            s.dead_lettered,
            s.retried,
            s.rejected,
            s.failed(natsapp_wasm::message::FailureCause::Panic)
        ),
        (7, 2, 1, 4, 1, 2, 2),
        "an uncaught exception (the raise, and the raise after the guest's own ack) is a crash, as a Rust panic is; retried counts the retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_reach_the_log_with_their_traceback() {
    for (component, expected) in [
        (
            guests::PY_KIT,
            [
                "Traceback (most recent call last):",
                "ValueError: bad value 42",
            ],
        ),
        (guests::JS_KIT, ["TypeError: bad value 42", "handle@"]),
    ] {
        let server = NatsServer::start();
        let file = ServiceFile::new(
            &server,
            &kit_service("consumer = { max_deliver = 1 }").replace("{testkit}", component),
        );
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = spawn_run(&file, log.path(), &[("NATSAPP_LOG_FORMAT", "json")]);
        let js = server.jetstream().await;
        durable_exists(&js, "IN", "kit").await;
        js_publish(&js, "in.kit", r#"{"op":"raise","message":"bad value 42"}"#).await;
        drained(&js, "IN", "kit").await;
        sigterm(&child);
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(log.path()).unwrap();
        // The whole traceback is one event of the guest's, under the subscriber's name.
        assert!(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .any(|e| e["target"] == "guest"
                    && e["subscriber"] == "kit"
                    && expected
                        .iter()
                        .all(|want| e["message"].as_str().unwrap().contains(want))),
            "{component}: no one guest event with {expected:?}:\n{text}"
        );
    }
}

async fn publishes_every_kind_of_value(component: &str, expected: &[&[u8]]) {
    let kit = Kit::start(kit_service("").replace("{testkit}", component)).await;
    let mut enc = subscribe(&kit.client, "testkit.out.enc").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"encodings"}"#).await;
    js_publish(&kit.js, "in.kit", r#"{"op":"term"}"#).await;
    use futures::StreamExt;
    for want in expected {
        let m = tokio::time::timeout(Duration::from_secs(20), enc.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &m.payload[..],
            *want,
            "{}",
            String::from_utf8_lossy(&m.payload)
        );
    }
    let s = stats_until(&kit.running, "kit", "both settled", |s| {
        s.acked == 1 && s.termed == 1
    })
    .await;
    assert_eq!(
        (s.received, s.settled_by_guest, s.naked),
        (2, 0, 0),
        "the guest's term is sent when its handler returns"
    );
    drained(&kit.js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publish_encodes_bytes_text_json_and_models() {
    publishes_every_kind_of_value(
        guests::PY_KIT,
        &[
            b"\x00raw",
            b"text",
            b"[1,2]",
            br#"{"a":1}"#,
            br#"{"kind":"model","mode":"json"}"#,
            br#"{"kind":"legacy"}"#,
            b"null",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_publish_encodes_bytes_text_and_json() {
    publishes_every_kind_of_value(
        guests::JS_KIT,
        &[
            b"\x00raw",
            b"text",
            b"[1,2]",
            br#"{"a":1}"#,
            br#"{"big":7}"#,
            b"null",
        ],
    )
    .await;
}

/// The default parser (UTF-8 → JSON → text → bytes), payloads the kit does
/// not read as an op: what type and value `handle` received.
async fn default_parser_gives(component: &str, cases: &[(&[u8], serde_json::Value)]) {
    let kit = Kit::start(kit_service("").replace("{testkit}", component)).await;
    let mut parsed = subscribe(&kit.client, "testkit.out.parsed").await;
    for (payload, want) in cases {
        js_publish(&kit.js, "in.kit", payload.to_vec()).await;
        let got = next_json(&mut parsed, Duration::from_secs(20)).await;
        assert_eq!(
            &got,
            want,
            "{component}: {:?}",
            String::from_utf8_lossy(payload)
        );
    }
    drained(&kit.js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_default_parser() {
    use serde_json::json;
    default_parser_gives(
        guests::PY_KIT,
        &[
            (b"[1,2]", json!({"type": "list", "value": [1, 2]})),
            (b" \n[1]", json!({"type": "list", "value": [1]})),
            (b"42", json!({"type": "int", "value": 42})),
            (b"true", json!({"type": "bool", "value": true})),
            (br#""quoted""#, json!({"type": "str", "value": "quoted"})),
            (b"text", json!({"type": "str", "value": "text"})),
            (b"nope", json!({"type": "str", "value": "nope"})),
            (b"", json!({"type": "str", "value": ""})),
            (b"\xff\x00", json!({"type": "bytes", "value": [255, 0]})),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_default_parser() {
    use serde_json::json;
    default_parser_gives(
        guests::JS_KIT,
        &[
            (b"[1,2]", json!({"type": "array", "value": [1, 2]})),
            (b" \n[1]", json!({"type": "array", "value": [1]})),
            (b"42", json!({"type": "number", "value": 42})),
            (b"true", json!({"type": "boolean", "value": true})),
            (br#""quoted""#, json!({"type": "string", "value": "quoted"})),
            (b"text", json!({"type": "string", "value": "text"})),
            (b"nope", json!({"type": "string", "value": "nope"})),
            (b"", json!({"type": "string", "value": ""})),
            (b"\xff\x00", json!({"type": "bytes", "value": [255, 0]})),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_key_value() {
    sdk_key_value(guests::PY_KIT, "subscriber \"kit\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sdk_key_value() {
    sdk_key_value(guests::JS_KIT, "denied: subscriber").await;
}

/// Create-if-absent, get, compare-and-swap, put, delete and a denied bucket
/// through each SDK's `Bucket`, checked against the bucket itself.
async fn sdk_key_value(component: &str, denied_starts: &str) {
    let text = kit_service("kv = { STATE = \"rw\" }\n[[buckets]]\nname = \"STATE\"");
    let kit = Kit::start(text.replace("{testkit}", component)).await;
    let mut out = subscribe(&kit.client, "testkit.out.kv").await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"kv","bucket":"STATE","key":"order.7"}"#,
    )
    .await;
    let mut report = next_json(&mut out, Duration::from_secs(20)).await;
    let first = report["first"].as_u64().expect("create returns a revision");
    let denied = report["denied"].take();
    assert_eq!(
        report,
        serde_json::json!({"first": first, "again": null, "value": {"n": 1}, "same_revision": true,
                           "second_newer": true, "stale": null, "gone": true, "denied": null})
    );
    let denied = denied.as_str().expect("a denied error");
    assert!(denied.starts_with(denied_starts), "{denied}");
    assert!(
        denied.contains("subscriber \"kit\" is not granted bucket \"OTHER\""),
        "{denied}"
    );
    let store = kit.js.get_key_value("STATE").await.unwrap();
    let entry = store.entry("order.7").await.unwrap().unwrap();
    assert_eq!(&entry.value[..], br#"{"n":2}"#);
    assert!(entry.revision > first);
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(settled_stats(&kit.running, "kit").await.acked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_http() {
    sdk_http(guests::PY_KIT, "from python", None).await;
}

/// A POST through the SDK's HTTP helper to a granted loopback server, a
/// 500 answered, and a request to an origin not granted denied (reported as
/// `denied_as` when the language's client hides the runtime's text).
async fn sdk_http(component: &str, echo: &str, denied_as: Option<serde_json::Value>) {
    let api = natsapp_wasm_tests::web::WebServer::start("").await;
    let other = natsapp_wasm_tests::web::WebServer::start("").await;
    let text = kit_service(&format!("http = [\"{}\"]", api.origin()));
    let kit = Kit::start(text.replace("{testkit}", component)).await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;
    let send = |method: &str, url: String, body: serde_json::Value| {
        serde_json::json!({"op": "http", "method": method, "url": url, "body": body}).to_string()
    };
    // A body larger than the request stream buffers: written while sent.
    let memo = "m".repeat(20_000);
    js_publish(
        &kit.js,
        "in.kit",
        send(
            "POST",
            format!("{}/echo", api.origin()),
            serde_json::json!({"amount": 30.5, "memo": memo}),
        ),
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(20)).await,
        serde_json::json!({"status": 200, "body": format!("{{\"amount\":30.5,\"memo\":\"{memo}\"}}"), "echo": echo})
    );
    js_publish(
        &kit.js,
        "in.kit",
        send(
            "GET",
            format!("{}/fail", api.origin()),
            serde_json::Value::Null,
        ),
    )
    .await;
    let failed = next_json(&mut out, Duration::from_secs(20)).await;
    assert_eq!(
        (&failed["status"], &failed["body"]),
        (
            &serde_json::json!(500),
            &serde_json::json!("payment service down")
        )
    );
    js_publish(
        &kit.js,
        "in.kit",
        send(
            "GET",
            format!("{}/ok", other.origin()),
            serde_json::Value::Null,
        ),
    )
    .await;
    let denied = next_json(&mut out, Duration::from_secs(20)).await;
    let rule = format!(
        "denied: subscriber \"kit\" is not granted {} (http = [\"{}\"] in service.toml)",
        other.origin(),
        api.origin()
    );
    assert_eq!(
        denied,
        denied_as.unwrap_or_else(|| serde_json::json!({"error": rule, "kind": "denied"}))
    );
    assert_eq!((api.hits(), other.hits()), (2, 0));
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (
            s.http(natsapp_wasm::counters::HttpOutcome::Ok),
            s.http(natsapp_wasm::counters::HttpOutcome::Denied)
        ),
        (2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sdk_http() {
    // fetch() reports every failure as the same NetworkError; the rule is
    // in the runtime's log.
    sdk_http(
        guests::JS_KIT,
        "from javascript",
        Some(serde_json::json!({"error": "NetworkError when attempting to fetch resource", "kind": "error"})),
    )
    .await;
}

/// The C recipe (guest-sdk/c: wit-bindgen's C bindings and its HTTP
/// helper): create-if-absent and a read in a bucket, a GET to a granted
/// origin, and one to an origin not granted, denied with the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_recipe_key_value_and_http() {
    let api = natsapp_wasm_tests::web::WebServer::start("").await;
    let other = natsapp_wasm_tests::web::WebServer::start("").await;
    let text = kit_service(&format!(
        "http = [\"{}\"]\nkv = {{ STATE = \"rw\" }}\n[[buckets]]\nname = \"STATE\"",
        api.origin()
    ));
    let kit = Kit::start(text.replace("{testkit}", guests::C_KIT)).await;
    async fn next(out: &mut async_nats::Subscriber) -> String {
        let m = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(out))
            .await
            .expect("a report")
            .unwrap();
        String::from_utf8(m.payload.to_vec()).unwrap()
    }
    let mut out = subscribe(&kit.client, "testkit.out.c").await;
    js_publish(&kit.js, "in.kit", "kv STATE order.9 first").await;
    let first = next(&mut out).await;
    js_publish(&kit.js, "in.kit", "kv STATE order.9 second").await;
    let second = next(&mut out).await;
    let revision = first
        .strip_prefix("created=")
        .and_then(|r| r.split(' ').next())
        .expect("a revision")
        .to_string();
    assert_eq!(
        first,
        format!("created={revision} value=first revision={revision}")
    );
    assert_eq!(
        second,
        format!("created=none value=first revision={revision}")
    );
    js_publish(&kit.js, "in.kit", "kv OTHER k v").await;
    assert_eq!(
        next(&mut out).await,
        "error 0: subscriber \"kit\" is not granted bucket \"OTHER\" (kv = { … } in service.toml)"
    );

    js_publish(&kit.js, "in.kit", format!("http {}/ok", api.origin())).await;
    assert_eq!(next(&mut out).await, "status=200 body=pong");
    js_publish(&kit.js, "in.kit", format!("http {}/ok", other.origin())).await;
    assert_eq!(
        next(&mut out).await,
        format!(
            "error=denied: subscriber \"kit\" is not granted {} (http = [\"{}\"] in service.toml)",
            other.origin(),
            api.origin()
        )
    );
    assert_eq!((api.hits(), other.hits()), (1, 0));
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(settled_stats(&kit.running, "kit").await.acked, 5);
}

/// A Python or JavaScript instance made ahead of need is warmed up once
/// before its message (WIT 0.1.3: the SDK's path, then the handler's
/// `warm_up` / `warmUp`); one made for its message, or a reused one, is
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_instances_made_ahead_are_warmed_up_once() {
    instances_made_ahead_are_warmed_up_once(guests::PY_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_instances_made_ahead_are_warmed_up_once() {
    instances_made_ahead_are_warmed_up_once(guests::JS_KIT).await;
}

async fn instances_made_ahead_are_warmed_up_once(component: &str) {
    for (extra, warmed, used) in [
        ("instances = \"per-message\"", [0, 1, 1, 1], 3),
        ("instances = \"reuse\"", [0, 0, 0, 0], 0),
    ] {
        let kit = Kit::start(kit_service(extra).replace("{testkit}", component)).await;
        let mut out = subscribe(&kit.client, "testkit.out.warmed").await;
        let mut seen = Vec::new();
        for n in 1..=4u64 {
            js_publish(&kit.js, "in.kit", r#"{"op":"warmed"}"#).await;
            seen.push(next_json(&mut out, Duration::from_secs(20)).await["warmed"].clone());
            // The next message finds an instance made ahead, when one is.
            stats_until(&kit.running, "kit", "the message acked", |s| {
                s.acked == n && (used == 0 || s.prepared_instances == 1)
            })
            .await;
        }
        assert_eq!(seen, warmed, "{component}, {extra}");
        let s = stats_until(&kit.running, "kit", "four acked", |s| s.acked == 4).await;
        assert_eq!(s.prepared_instances_used, used, "{component}, {extra}");
        drained(&kit.js, "IN", "kit").await;
    }
}

/// A warm-up has no message: what it publishes is refused, never sent
/// once per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_cannot_publish() {
    let kit = Kit::start(
        kit_service("instances = \"per-message\"\nconfig = { warm_up = \"publish\" }")
            .replace("{testkit}", guests::PY_KIT),
    )
    .await;
    let mut out = subscribe(&kit.client, "testkit.out.warmed").await;
    let mut from_warm_up = subscribe(&kit.client, "testkit.out.warm_up").await;
    let mut reports = Vec::new();
    for n in 1..=3u64 {
        js_publish(&kit.js, "in.kit", r#"{"op":"warmed"}"#).await;
        reports.push(next_json(&mut out, Duration::from_secs(20)).await);
        stats_until(&kit.running, "kit", "the message acked", |s| {
            s.acked == n && s.prepared_instances == 1
        })
        .await;
    }
    assert_eq!(
        reports[0]["refused"],
        serde_json::Value::Null,
        "made for its message: no warm-up"
    );
    for report in &reports[1..] {
        assert_eq!(report["warmed"], 1);
        let refused = report["refused"].as_str().expect("the publish refused");
        assert!(
            refused.contains(
                "no message yet (an instance made ahead of need, being instantiated or warmed up)"
            ),
            "{refused}"
        );
    }
    // Every message's own publish went out; the warm-ups' did not.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            futures::StreamExt::next(&mut from_warm_up)
        )
        .await
        .is_err(),
        "a warm-up's publish was sent"
    );
    drained(&kit.js, "IN", "kit").await;
}

/// A warm-up that throws is logged with the guest's exception and drops
/// its instance; messages make their own, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_up_that_throws_drops_its_instance_and_loses_nothing() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service("instances = \"per-message\"\nconfig = { warm_up = \"raise\" }")
            .replace("{testkit}", guests::PY_KIT),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[]);
    let client = server.client().await;
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    let mut out = subscribe(&client, "testkit.out.warmed").await;
    js_publish(&js, "in.kit", r#"{"op":"warmed"}"#).await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(20)).await["warmed"],
        0
    );
    // The first message wakes the preparing task; its instance's warm-up throws.
    logged(log.path(), "RuntimeError: warm-up refused").await;
    logged(
        log.path(),
        "the warm-up of an instance made ahead of need failed",
    )
    .await;
    for _ in 0..3 {
        js_publish(&js, "in.kit", r#"{"op":"warmed"}"#).await;
        assert_eq!(
            next_json(&mut out, Duration::from_secs(20)).await["warmed"],
            0
        );
    }
    drained(&js, "IN", "kit").await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), 0);
}
