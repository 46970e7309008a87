//! Publishing and requests from inside a handler.

use crate::{kit_service, Kit};
use natsapp_wasm_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_stream_returns_the_puback_and_core_returns_none() {
    let Kit {
        server: _server,
        running,
        client,
        js,
    } = Kit::start(kit_service("")).await;
    let mut out = subscribe(&client, "testkit.out.publish").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish","subject":"out.a","data":"one"}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await,
        serde_json::json!({"ack": {"stream": "OUT", "sequence": 1, "duplicate": false}})
    );
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish","subject":"svc.core","data":"two"}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await,
        serde_json::json!({"ack": null})
    );
    drained(&js, "IN", "kit").await;
    assert_eq!(settled_stats(&running, "kit").await.acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_input_does_not_duplicate_its_output() {
    let Kit {
        server: _server,
        running,
        client,
        js,
    } = Kit::start(kit_service("")).await;
    let mut out = subscribe(&client, "testkit.out.publish").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish_then_fail","subject":"out.b","data":"once","n":2}"#,
    )
    .await;
    let first = next_json(&mut out, Duration::from_secs(10)).await;
    let second = next_json(&mut out, Duration::from_secs(10)).await;
    assert_eq!(
        first,
        serde_json::json!({"sequence": 1, "duplicate": false, "delivered": 1})
    );
    assert_eq!(
        second,
        serde_json::json!({"sequence": 1, "duplicate": true, "delivered": 2})
    );
    drained(&js, "IN", "kit").await;
    assert_eq!(stream_messages(&js, "OUT").await, 1);
    assert_eq!(settled_stats(&running, "kit").await.acked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_gets_the_reply() {
    let Kit {
        server: _server,
        running: _running,
        client,
        js,
    } = Kit::start(kit_service("")).await;
    let mut responder = subscribe(&client, "svc.echo").await;
    let replier = client.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(m) = responder.next().await {
            let tenant = m
                .headers
                .as_ref()
                .and_then(|h| h.get("X-Tenant"))
                .map_or("-".to_string(), |v| v.as_str().to_string());
            let body = format!("pong:{}:{tenant}", String::from_utf8_lossy(&m.payload));
            replier
                .publish(m.reply.unwrap(), body.into())
                .await
                .unwrap();
        }
    });
    let mut out = subscribe(&client, "testkit.out.request").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"request","subject":"svc.echo","data":"ping","timeout_ms":30000}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await["reply"],
        "pong:ping:-"
    );
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"request","subject":"svc.echo","data":"ping","timeout_ms":30000,"headers":[["X-Tenant","acme"]]}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await["reply"],
        "pong:ping:acme",
        "the request's headers reach the responder"
    );
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_the_allow_list_is_denied() {
    let Kit {
        server: _server,
        running: _running,
        client,
        js,
    } = Kit::start(kit_service("")).await;
    let mut forbidden = subscribe(&client, "forbidden.x").await;
    let mut out = subscribe(&client, "testkit.out.denied").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"try_publish","subject":"forbidden.x"}"#,
    )
    .await;
    js_publish(&js, "in.kit", r#"{"op":"try_publish","subject":"out.*"}"#).await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await["result"],
        r#"Err("denied: subscriber \"kit\" may not publish to \"forbidden.x\" (allowed: testkit.out.>, out.>, svc.>)")"#
    );
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await["result"],
        r#"Err("invalid: cannot publish to a wildcard subject \"out.*\"")"#
    );
    use futures::StreamExt;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), forbidden.next())
            .await
            .is_err(),
        "a denied publish reached the wire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_subject_headers_delivery_and_config() {
    let Kit {
        server: _server,
        running: _running,
        client,
        js,
    } = Kit::start(kit_service(r#"config = { region = "eu", tier = "gold" }"#)).await;
    let mut out = subscribe(&client, "testkit.out.info").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seq = js_publish_with_headers(
        &js,
        "in.kit",
        &[("X-Trace", "abc"), ("Reply-To", "svc.answer")],
        r#"{"op":"info"}"#,
    )
    .await;
    let info = next_json(&mut out, Duration::from_secs(10)).await;
    assert_eq!(info["subject"], "in.kit");
    assert_eq!(info["reply"], "svc.answer");
    assert_eq!(
        (info["stream"].as_str(), info["consumer"].as_str()),
        (Some("IN"), Some("kit"))
    );
    assert_eq!(info["stream_sequence"], seq);
    assert_eq!(info["delivered"], 1);
    assert!(info["published_unix_ns"].as_u64().unwrap() >= before - 1_000_000_000);
    let headers = info["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["X-Trace", "abc"])),
        "{headers:?}"
    );
    let mut config: Vec<_> = info["config"].as_array().unwrap().clone();
    config.sort_by_key(|v| v[0].as_str().unwrap().to_string());
    assert_eq!(
        config,
        vec![
            serde_json::json!(["region", "eu"]),
            serde_json::json!(["tier", "gold"])
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_answers_on_reply_to() {
    let Kit {
        server: _server,
        running: _running,
        client,
        js,
    } = Kit::start(kit_service("")).await;
    let mut answers = subscribe(&client, "svc.answer").await;
    js_publish_with_headers(
        &js,
        "in.kit",
        &[("Reply-To", "svc.answer")],
        r#"{"op":"reply","data":"{\"healthy\":true}"}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut answers, Duration::from_secs(10)).await,
        serde_json::json!({"healthy": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_environment_files_or_network() {
    let kit = Kit::start(kit_service("")).await;
    let mut out = subscribe(&kit.client, "testkit.out.sandbox").await;
    js_publish(&kit.js, "in.kit", r#"{"op":"sandbox"}"#).await;
    // The probe cannot block (no sockets, no name lookups); a loaded
    // machine can still delay it, so wait for the message to be settled
    // (its report goes out before) rather than for the report alone.
    eventually(
        Duration::from_secs(120),
        "the sandbox probe settled",
        || async {
            let s = kit.running.subscriber("kit");
            (s.received == 1 && s.in_flight == 0).then_some(())
        },
    )
    .await;
    assert_eq!(
        next_json(&mut out, Duration::from_secs(10)).await,
        serde_json::json!({
            "env_vars": 0, "args": 0, "read_root": false, "read_etc_passwd": false,
            "write_tmp": false, "tcp_connect": false, "resolve_dns": false,
        })
    );
    assert!(!std::path::Path::new("/tmp/natsapp-escape").exists());
}
