//! Outbound HTTP: granted origins only, internal addresses only when
//! granted as such, redirects checked again, limits on stalling servers
//! and huge bodies, a tenant's quota against a flood — each counted.

use crate::{kit_service, Kit};
use natsapp_wasm::counters::HttpOutcome;
use natsapp_wasm_tests::web::WebServer;
use natsapp_wasm_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Sends an `http` op and returns its report.
async fn http(kit: &Kit, out: &mut async_nats::Subscriber, op: Value) -> Value {
    let mut op = op;
    op["op"] = json!("http");
    js_publish(&kit.js, "in.kit", op.to_string()).await;
    next_json(out, Duration::from_secs(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_origin_is_reached_and_every_other_one_denied() {
    let api = WebServer::start("").await;
    let other = WebServer::start("").await;
    let kit = Kit::start(kit_service(&format!("http = [\"{}\"]", api.origin()))).await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;

    let ok = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/ok", api.origin())}),
    )
    .await;
    assert_eq!(ok, json!({"status": 200, "body": "pong", "echo": null}));
    let failed = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/fail", api.origin())}),
    )
    .await;
    assert_eq!(
        failed["status"], 500,
        "a 5xx is a response: the handler decides"
    );
    // A body larger than the request stream buffers: written while sent.
    let large = format!("charge 30.50 {}", "x".repeat(20_000));
    let echo = http(
        &kit,
        &mut out,
        json!({"method": "POST", "url": format!("{}/echo", api.origin()), "body": large}),
    )
    .await;
    assert_eq!(echo["body"], large);

    let denied = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/ok", other.origin())}),
    )
    .await;
    assert_eq!(
        denied,
        json!({
            "error": format!("denied: subscriber \"kit\" is not granted {} (http = [\"{}\"] in service.toml)", other.origin(), api.origin()),
            "kind": "Denied",
        })
    );
    let metadata = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(metadata["kind"], "Denied", "{metadata}");

    assert_eq!(api.hits(), 3);
    assert_eq!(
        other.hits(),
        0,
        "nothing left the process for an origin not granted"
    );
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(s.acked, 5);
    assert_eq!(
        (s.http(HttpOutcome::Ok), s.http(HttpOutcome::Denied)),
        (3, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_reaches_an_internal_address_only_when_granted_as_internal() {
    let api = WebServer::start("").await;
    let url = format!("http://localhost:{}/ok", api.port());
    let by_name = format!("http = [\"http://localhost:{}\"]", api.port());
    let kit = Kit::start(kit_service(&by_name)).await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;
    let refused = http(&kit, &mut out, json!({"method": "GET", "url": url})).await;
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.starts_with("denied: localhost resolves to ") && error.contains(
            ", an internal address (loopback, private, link-local or metadata); a grant reaches one only as an IP literal or with internal = true"
        ),
        "{error}"
    );
    assert_eq!(api.hits(), 0);
    drop(kit);

    let internal = format!(
        "http = [{{ origin = \"http://localhost:{}\", internal = true }}]",
        api.port()
    );
    let kit = Kit::start(kit_service(&internal)).await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;
    let ok = http(&kit, &mut out, json!({"method": "GET", "url": url})).await;
    assert_eq!(ok["body"], "pong", "{ok}");
    assert_eq!(api.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redirect_is_checked_again() {
    let inside = WebServer::start("").await;
    let api = WebServer::start(&format!("{}/ok", inside.origin())).await;
    let kit = Kit::start(kit_service(&format!("http = [\"{}\"]", api.origin()))).await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;
    let report = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/redirect", api.origin()), "follow": 3}),
    )
    .await;
    assert_eq!(report["kind"], "Denied", "{report}");
    assert!(
        report["error"].as_str().unwrap().contains(&inside.origin()),
        "{report}"
    );
    assert_eq!((api.hits(), inside.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_server_and_a_huge_body_are_cut_at_the_limits() {
    let api = WebServer::start("").await;
    let kit = Kit::start(kit_service(&format!(
        "http = [\"{}\"]\nlimits = {{ http_timeout = \"500ms\", http_response = \"64KiB\" }}",
        api.origin()
    )))
    .await;
    let mut out = subscribe(&kit.client, "testkit.out.http").await;
    // Uncapped, the guest's 60 s (or the handler's 30 s limit) would pass
    // the 20 s `http` waits for a report.
    let stalled = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/stall", api.origin()), "timeout_ms": 60000}),
    )
    .await;
    assert_eq!(
        stalled,
        json!({"error": "HTTP request timed out", "kind": "Timeout"})
    );
    let big = http(
        &kit,
        &mut out,
        json!({"method": "GET", "url": format!("{}/big", api.origin())}),
    )
    .await;
    assert_eq!(
        big,
        json!({"error": "HTTP response body larger than the limit", "kind": "TooLarge"})
    );

    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(s.acked, 2);
    assert_eq!(
        (s.http(HttpOutcome::Timeout), s.http(HttpOutcome::TooLarge)),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_http_rate_refuses_a_flood_at_once() {
    let api = WebServer::start("").await;
    let text = kit_service(&format!("tenant = \"acme\"\nhttp = [\"{}\"]", api.origin())).replace(
        "[[subscribers]]",
        &format!(
            "[[tenants]]\nname = \"acme\"\nquotas = {{ http_rate = \"5/s\" }}\ngrants = {{ http = [\"{}\"] }}\n\n[[subscribers]]",
            api.origin()
        ),
    );
    let kit = Kit::start(text).await;
    let mut out = subscribe(&kit.client, "testkit.out.http_flood").await;
    let op = json!({"op": "http_flood", "url": format!("{}/ok", api.origin()), "n": 200});
    js_publish(&kit.js, "in.kit", op.to_string()).await;
    let report = next_json(&mut out, Duration::from_secs(30)).await;
    let answered = report["answered"].as_u64().unwrap();
    assert!((5..=10).contains(&answered), "{report}");
    assert_eq!(
        report["error"],
        "denied: quota: subscriber \"kit\"'s tenant has used its http_rate of 5/s"
    );
    assert_eq!(
        api.hits(),
        answered,
        "refused requests never reached the server"
    );
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(s.http(HttpOutcome::Ok), answered);
    assert_eq!(s.http(HttpOutcome::Denied), 200 - answered);
}

#[test]
fn http_grants_are_checked_against_the_tenant() {
    let (_dir, path) = acme_service(
        r#"http = ["https://*.acme.example"]"#,
        r#"http = ["https://api.acme.example", "https://evil.example", { origin = "https://db.acme.example", internal = true }, "ftp://x"]"#,
    );
    let err = natsapp_wasm::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    for expected in [
        "subscribers[0] (\"charge\").http: https://evil.example is outside tenant \"acme\"'s grants.http (https://*.acme.example)",
        "subscribers[0] (\"charge\").http: https://db.acme.example (internal) is outside tenant \"acme\"'s grants.http (https://*.acme.example)",
        "subscribers[0] (\"charge\").http: \"ftp://x\" is not an origin: write \"https://host\" or \"http://host:port\"",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in\n{err}");
    }
    assert!(!err.contains("api.acme.example"), "{err}");
}
