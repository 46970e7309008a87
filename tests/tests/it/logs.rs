//! Logs as JSON lines, and a guest's multi-line output as one event.

use crate::kit_service;
use natsapp_wasm_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_service_subscriber_tenant_and_sequence_and_a_panic_is_one_event() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::tenants::in_tenant_acme(
            kit_service("consumer = { max_deliver = 1 }"),
            "cpu = \"1\"",
        ),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[("NATSAPP_LOG_FORMAT", "json")]);
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"panic","message":"line one\nline two"}"#,
    )
    .await;
    drained(&js, "IN", "kit").await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);

    let text = std::fs::read_to_string(log.path()).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().all(|e| e["service"] == "kit-service"),
        "{text}"
    );
    let failed = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("handler failed"))
        })
        .unwrap_or_else(|| panic!("no handler failure in:\n{text}"));
    assert_eq!(
        (
            &failed["subscriber"],
            &failed["tenant"],
            &failed["seq"],
            &failed["cause"],
            &failed["level"]
        ),
        (
            &"kit".into(),
            &"acme".into(),
            &1.into(),
            &"panic".into(),
            &"WARN".into()
        ),
        "{failed}"
    );
    let guest: Vec<&serde_json::Value> = events.iter().filter(|e| e["target"] == "guest").collect();
    let panic = guest
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("panicked at"))
        .unwrap_or_else(|| panic!("no guest panic in:\n{text}"));
    let message = panic["message"].as_str().unwrap();
    assert!(
        message.contains("line one\nline two"),
        "the panic's lines are one event: {guest:#?}"
    );
    assert_eq!(panic["tenant"], "acme");
}

/// A config value marked secret reaches the guest, but the runtime never
/// shows it: not in `check`, not in the guest's logged output, not in a
/// reject reason (logged and carried by the dead letter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_config_value_is_masked_everywhere_the_runtime_shows_it() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::with_dlq(
            "consumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"\nconfig = { region = \"eu\", api_key = { secret = \"${PAYMENT_API_KEY}\" } }",
        ),
    );
    let key = "sk-live-7f3a9c";
    let check = std::process::Command::new(natsapp_bin())
        .args(["check", file.path().to_str().unwrap()])
        .env("PAYMENT_API_KEY", key)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&check.stdout);
    assert!(
        plan.contains("    config: api_key = (secret), region = \"eu\"\n"),
        "{plan}"
    );
    assert!(!plan.contains(key));

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[("PAYMENT_API_KEY", key)]);
    let client = server.client().await;
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    let mut info = subscribe(&client, "testkit.out.info").await;
    js_publish(&js, "in.kit", r#"{"op":"info"}"#).await;
    let seen = next_json(&mut info, Duration::from_secs(10)).await;
    assert!(
        seen["config"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["api_key", key])),
        "the guest gets the real value: {seen}"
    );
    let leak =
        format!(r#"{{"op":"log","stdout":"calling with {key}","stderr":"auth {key} failed"}}"#);
    js_publish(&js, "in.kit", leak).await;
    js_publish(
        &js,
        "in.kit",
        format!(r#"{{"op":"reject","reason":"key {key} refused"}}"#),
    )
    .await;
    stream_has(&js, "DLQ", 1).await;
    drained(&js, "IN", "kit").await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);

    let dead = crate::dead_letter(&js, 1).await;
    assert_eq!(
        crate::header(&dead, "Natsapp-Reason"),
        "key [secret api_key] refused"
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(!text.contains(key), "the secret reached the log:\n{text}");
    for masked in [
        "calling with [secret api_key]",
        "auth [secret api_key] failed",
        "key [secret api_key] refused",
    ] {
        assert!(text.contains(masked), "{masked:?} not in:\n{text}");
    }
}
