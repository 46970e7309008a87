//! The `natsapp-wasm` binary: `check`, `run`, signals and exit codes.

use crate::kit_service;
use natsapp_wasm_tests::*;
use std::process::Command;
use std::time::Duration;

fn natsapp(args: &[&str]) -> std::process::Output {
    Command::new(natsapp_bin())
        .args(args)
        .env_remove("NATS_SERVERS")
        .env_remove("NATS_DEBUG")
        .output()
        .unwrap()
}

/// What `natsapp-wasm check FILE` prints; panics with its stderr unless it
/// succeeded.
fn plan_of(file: &std::path::Path) -> String {
    let out = natsapp(&["check", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics unless every one of `lines` is a whole line of `plan`.
fn assert_lines(plan: &str, lines: &[String]) {
    for line in lines {
        assert!(
            plan.lines().any(|l| l == line),
            "missing line {line:?} in:\n{plan}"
        );
    }
}

#[test]
fn check_prints_the_plan() {
    let example = repo_root().join("examples/order-processor/service.toml");
    let stdout = plan_of(&example);
    let component = repo_root().join("guests/target/wasm32-wasip2/release/order_processor.wasm");
    assert_lines(&stdout, &[
        format!("service \"order-processor\" ({})", example.display()),
        "nats: nats://localhost:4222 (reconnect every 2s, up to 10000 attempts; graceful shutdown 30s)".to_string(),
        "  ORDER_EVENTS [order.created] (declare if missing)".to_string(),
        "  order.status -> stream ORDER_STATUS (PubAck within 30s)".to_string(),
        "  process-order: order.created on stream ORDER_EVENTS, durable order_processor_service".to_string(),
        format!("    component {} ({} KiB): implements natsapp:handler/handler@0.1.3", component.display(), std::fs::metadata(&component).unwrap().len().div_ceil(1024)),
        "    concurrency 4, batch 3, pull timeout 10s, ack_wait 10s, max_deliver 3 (server 4), backoff [1s, 10s], instances reused".to_string(),
        format!(
            "    guest cpu: {} shared equally by the busy ones of the service's own 1 subscriber",
            match natsapp_wasm::wasm::cpu::share::service_pool() {
                1.0 => "1 core".to_string(),
                c => format!("{c} cores"),
            }
        ),
        "    limits: memory 64 MiB, 5s per message; output ids: sequence".to_string(),
        "      order.status (JetStream, stream ORDER_STATUS, PubAck within 30s)".to_string(),
        "      inventory.updates (JetStream, stream INVENTORY, PubAck within 30s)".to_string(),
        "    dead letter: dlq.order (JetStream, stream DEAD_LETTERS; must be captured by a stream on the server)".to_string(),
    ]);
}

#[test]
fn check_reports_a_broken_file_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.toml");
    std::fs::write(
        &path,
        "[service]\nname = \"x\"\ngraceful_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = natsapp(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "error: {}:3:20: service.graceful_timeout: invalid duration \"soon\" (expected number at 0); write it as \"30s\", \"500ms\", \"2m\" or a number of seconds\n\
             3 | graceful_timeout = \"soon\"\n  |                    ^\n",
            path.display()
        )
    );
}

#[test]
fn check_refuses_components_that_do_not_implement_the_world() {
    let server = NatsServer::start();
    for (guest, path, expected) in [
        ("{not_a_handler}", guests::NOT_A_HANDLER, "does not export natsapp:handler/handler@0.1.3 (it exports nothing)"),
        (
            "{other_version}",
            guests::OTHER_VERSION,
            "does not export natsapp:handler/handler@0.1.3 (it exports natsapp:handler/handler@0.2.0, built against another version of the package)",
        ),
        (
            "{unknown_import}",
            guests::UNKNOWN_IMPORT,
            "imports natsapp:handler/publisher@0.2.0 (this runtime provides natsapp:handler@0.1.3), which the runtime does not provide",
        ),
    ] {
        let file = ServiceFile::new(&server, &kit_service("").replace("{testkit}", guest));
        let out = natsapp(&["check", file.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head = format!("error: component {path} (subscriber \"kit\"): {expected}");
        assert!(stderr.starts_with(&head), "expected {head:?}\ngot {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_2_when_a_stream_is_missing() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service("").replace("stream = \"IN\"", "stream = \"ELSEWHERE\""),
    );
    let out = natsapp(&["run", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with("error: stream \"ELSEWHERE\" (stream of subscriber \"kit\") is neither declared in [[streams]] nor present on the server\n"),
        "{stderr}"
    );
}

/// Runs `file` in the binary (with `env`), publishes `n` messages whose
/// handlers wait at a gate, and returns once two of them (the subscriber's
/// concurrency) have arrived there.
async fn run_with_two_at_the_gate(
    server: &NatsServer,
    file: &ServiceFile,
    log: &std::path::Path,
    env: &[(&str, &str)],
    n: usize,
) -> (std::process::Child, async_nats::jetstream::Context, Gate) {
    let child = spawn_run(file, log, env);
    let client = server.client().await;
    let mut gate = Gate::new(&client).await;
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    for _ in 0..n {
        js_publish(&js, "in.kit", GATED).await;
    }
    gate.arrived(2).await;
    (child, js, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_messages_in_flight_settles_everything_and_exits_0() {
    let server = NatsServer::start();
    // The grace period outlasts the test's wait for "stopped pulling".
    let file = ServiceFile::new(
        &server,
        &kit_service("concurrency = 2\nlimits = { timeout = \"120s\" }")
            .replace("graceful_timeout = \"5s\"", "graceful_timeout = \"120s\""),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let debug = [("NATS_DEBUG", "true")];
    let (mut child, js, mut gate) =
        run_with_two_at_the_gate(&server, &file, log.path(), &debug, 6).await;
    sigterm(&child);
    // Once it stopped pulling, the two handlers may finish: nothing more is fetched.
    logged(log.path(), "stopped pulling").await;
    gate.open().await;
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let (pending, ack_pending) = consumer_counts(&js, "IN", "kit").await;
    assert_eq!(ack_pending, 0, "a fetched message was left unsettled");
    assert_eq!(
        pending, 4,
        "the two in-flight messages finished and were acked; the rest wait"
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("received=2 acked=2 naked=0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_past_the_grace_period_are_nakd_and_the_process_exits_0() {
    let server = NatsServer::start();
    let text = kit_service(
        "concurrency = 2\nlimits = { timeout = \"120s\" }\nconsumer = { ack_wait = \"120s\" }",
    )
    .replace("graceful_timeout = \"5s\"", "graceful_timeout = \"500ms\"");
    let file = ServiceFile::new(&server, &text);
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut child, js, _gate) = run_with_two_at_the_gate(&server, &file, log.path(), &[], 3).await;
    sigterm(&child);
    // The gate stays shut: only the grace period can end the handlers, and
    // a process that waited for them would not exit for two minutes.
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("graceful_timeout reached with the handler still running"),
        "{text}"
    );
    // The two abandoned messages were nak'd, so a pull gets them again
    // with the one never fetched, well inside their 120 s ack_wait.
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("IN")
        .await
        .unwrap()
        .get_consumer("kit")
        .await
        .unwrap();
    let mut batch = consumer
        .batch()
        .max_messages(3)
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .unwrap();
    let mut delivered = Vec::new();
    use futures::StreamExt;
    while let Some(m) = batch.next().await {
        delivered.push(m.unwrap().info().unwrap().delivered);
    }
    delivered.sort();
    assert_eq!(
        delivered,
        vec![1, 2, 2],
        "the naks did not reach the server: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_debug_turns_on_debug_logs_and_periodic_statistics() {
    let server = NatsServer::start();
    let text = kit_service("").replace(
        "graceful_timeout = \"5s\"",
        "graceful_timeout = \"5s\"\nstats_interval = \"300ms\"",
    );
    let file = ServiceFile::new(&server, &text);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[("NATS_DEBUG", "true")]);
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    eventually(
        Duration::from_secs(10),
        "a periodic statistics line with the message",
        || async {
            let text = std::fs::read_to_string(log.path()).unwrap();
            text.contains("received=1 acked=1").then_some(())
        },
    )
    .await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), 0);
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("DEBUG") && text.contains("stopped pulling"),
        "no debug log:\n{text}"
    );
    assert!(
        text.matches("statistics").count() >= 2,
        "statistics were not logged periodically:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    let server = NatsServer::start();
    // A graceful stop would wait two minutes for the handlers at the gate.
    let file = ServiceFile::new(
        &server,
        &kit_service("concurrency = 2\nlimits = { timeout = \"120s\" }")
            .replace("graceful_timeout = \"5s\"", "graceful_timeout = \"120s\""),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut child, _js, _gate) =
        run_with_two_at_the_gate(&server, &file, log.path(), &[], 2).await;
    sigterm(&child);
    // Signals sent before the process has taken the first are one signal:
    // send the second once it logged the first.
    logged(log.path(), "SIGTERM received").await;
    sigterm(&child);
    // The handlers wait at a shut gate: exiting at all, with 130, says
    // the second signal cut the stop short.
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 130);
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("SIGTERM received again: exiting now"),
        "{text}"
    );
}

#[test]
fn check_fills_the_cache_and_cache_clear_empties_it() {
    let cache = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/order-processor/service.toml");
    let with_cache = |args: &[&str]| {
        succeeds(
            Command::new(natsapp_bin())
                .args(args)
                .env("NATSAPP_CACHE_DIR", cache.path()),
        )
    };
    let dir = with_cache(&["cache", "dir"]);
    assert_eq!(
        String::from_utf8_lossy(&dir.stdout),
        format!("{}\n", cache.path().display())
    );
    let first = with_cache(&["check", example.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&first.stderr).contains("cached=Miss"));
    let second = with_cache(&["check", example.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&second.stderr).contains("cached=Hit"));
    let clear = with_cache(&["cache", "clear"]);
    assert_eq!(
        String::from_utf8_lossy(&clear.stdout),
        format!(
            "removed 1 compiled component(s) from {}\n",
            cache.path().display()
        )
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn docs_writes_an_asyncapi_document_of_the_channels() {
    let example = repo_root().join("examples/order-processor/service.toml");
    let out = natsapp(&["docs", example.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("docs prints one JSON document");
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "order-processor");
    assert_eq!(
        doc["servers"]["nats-1"],
        serde_json::json!({"host": "localhost:4222", "protocol": "nats"})
    );
    let channels = doc["channels"].as_object().unwrap();
    let channel_of = |operation: &str| {
        let op = &doc["operations"][operation];
        let reference = op["channel"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{operation}: {op}"));
        let id = reference
            .strip_prefix("#/channels/")
            .expect("a local reference");
        (
            op["action"].as_str().unwrap().to_string(),
            channels[id].clone(),
        )
    };
    let (action, input) = channel_of("process-order");
    assert_eq!(
        (action.as_str(), &input["address"]),
        ("receive", &"order.created".into())
    );
    assert_eq!(input["description"], "JetStream, stream ORDER_EVENTS");
    let (action, status) = channel_of("process-order-publish-1");
    assert_eq!(
        (action.as_str(), &status["address"]),
        ("send", &"order.status".into())
    );
    assert_eq!(
        status["description"],
        "JetStream, stream ORDER_STATUS, PubAck within 30s"
    );
    let (_, dead) = channel_of("process-order-dead-letter");
    assert_eq!(dead["address"], "dlq.order");
    // Every operation's channel resolves, and every channel is used.
    let used: std::collections::BTreeSet<String> = doc["operations"]
        .as_object()
        .unwrap()
        .keys()
        .map(|op| channel_of(op).1["address"].as_str().unwrap().to_string())
        .collect();
    let declared: std::collections::BTreeSet<String> = channels
        .values()
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(used, declared);
}

/// A kit service whose subscriber, under tenant acme, asks for more
/// handlers and more memory than acme's quotas allow.
fn capped_service() -> String {
    kit_service("concurrency = 100\nlimits = { memory = \"256MiB\" }")
        .replace(
            "[[subscribers]]",
            "[[tenants]]\nname = \"acme\"\nquotas = { memory = \"128MiB\", publish_rate = \"100/s\" }\n\n[[subscribers]]",
        )
        .replace("durable = \"kit\"", "durable = \"kit\"\ntenant = \"acme\"")
}

const CAPPED_CONCURRENCY: &str = "subscriber \"kit\" sets concurrency = 100, but its tenant \"acme\" allows 32 (quotas.concurrency): it gets at most 32";
const CAPPED_MEMORY: &str = "subscriber \"kit\" sets limits.memory = \"256MiB\", but its tenant \"acme\" allows \"128MiB\" (quotas.memory): it gets at most \"128MiB\"";

#[test]
fn check_shows_every_tenant_quota_and_warns_of_settings_a_quota_caps() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &capped_service());
    // A capped setting is a warning, not an error: check succeeds.
    let stdout = plan_of(&file.path());
    assert_lines(&stdout, &[
        format!("  acme: own connection to {} as none", server.url()),
        // The defaults shown beside the quotas the file sets.
        "    quotas: concurrency 32, cpu 1 core, memory 128MiB, 1000 publishes per message, publish rate 100/s, publish bytes 64MiB/s, http rate 1000/s, http concurrency 64, components up to 64MiB, compiled within 2m, at most 100 handlers".to_string(),
        "    grants: publish [any], kv [any], http [any]".to_string(),
        "    guest cpu: 1 core shared equally by the busy ones of tenant acme's 1 subscriber".to_string(),
        "warnings:".to_string(),
        format!("  {CAPPED_CONCURRENCY}"),
        format!("  {CAPPED_MEMORY}"),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_warns_of_settings_a_quota_caps() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &capped_service());
    let log = file.path().with_file_name("run.log");
    let mut child = spawn_run(&file, &log, &[]);
    logged(&log, CAPPED_CONCURRENCY).await;
    logged(&log, CAPPED_MEMORY).await;
    logged(&log, " running ").await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 0);
}
