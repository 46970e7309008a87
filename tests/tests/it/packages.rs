//! Third-party packages in handlers, as a user brings them: a project made
//! by `natsapp-wasm new`, its dependency file, its own build command.

use natsapp_wasm_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `natsapp-wasm new NAME --lang LANG` in a fresh folder, with `files`
/// (copied from `from`) over the generated ones.
fn project(name: &str, lang: &str, from: &Path, files: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    succeeds(
        Command::new(natsapp_bin())
            .args(["new", name, "--lang", lang])
            .current_dir(parent.path()),
    );
    let root = parent.path().join(name);
    for f in files {
        std::fs::copy(from.join(f), root.join(f)).unwrap();
    }
    (parent, root)
}

/// Runs the project's `./build.sh` with the repository's tools on PATH.
fn build(root: &Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        repo_root().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("./build.sh")
        .current_dir(root)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// Runs the project's `./build.sh`, which must succeed.
fn build_ok(root: &Path) {
    let built = build(root);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapper_examples_run_unchanged_with_pydantic() {
    let example = repo_root().join("examples/python-pydantic");
    let (_dir, root) = project(
        "wrapper-examples",
        "python",
        &example,
        &["app.py", "requirements.txt", "service.toml"],
    );
    build_ok(&root);
    assert!(
        root.join("deps/pydantic/main.py").exists(),
        "pydantic vendored into deps/"
    );

    let server = NatsServer::start();
    let text = std::fs::read_to_string(root.join("service.toml"))
        .unwrap()
        .replace("nats://localhost:4222", "{url}")
        .replace(
            "\"wrapper_examples.wasm\"",
            &format!("{:?}", root.join("wrapper_examples.wasm")),
        );
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    js_publish(
        &js,
        "user.messages",
        r#"{"user_id": 7, "content": "hello", "timestamp": "2026-11-28T10:00:00Z"}"#,
    )
    .await;
    js_publish(
        &js,
        "payment.process",
        r#"{"payment_id": "p1", "amount": 30}"#,
    )
    .await;
    // Not a valid PaymentRequest: ValidationError → msg.term() → dead letter.
    js_publish(
        &js,
        "payment.process",
        r#"{"payment_id": "bad", "amount": "lots"}"#,
    )
    .await;
    // The service fails every time: re-raised → retried up to max_deliver (5).
    js_publish(
        &js,
        "payment.process",
        r#"{"payment_id": "big", "amount": 5000}"#,
    )
    .await;
    drained(&js, "USER_STREAM", "message_processor").await;
    drained(&js, "PAYMENT_STREAM", "payment_processor").await;
    stream_has(&js, "RESULTS", 4).await;

    let results = js.get_stream("RESULTS").await.unwrap();
    let mut by_subject: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    let mut dead_reasons = Vec::new();
    for seq in 1..=4 {
        let m = results.get_raw_message(seq).await.unwrap();
        if m.subject.starts_with("dlq.") {
            let reason = m
                .headers
                .get("Natsapp-Reason")
                .unwrap()
                .as_str()
                .to_string();
            let payment: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            dead_reasons.push((payment["payment_id"].as_str().unwrap().to_string(), reason));
        } else {
            by_subject
                .entry(m.subject.to_string())
                .or_default()
                .push(serde_json::from_slice(&m.payload).unwrap());
        }
    }
    assert_eq!(
        by_subject["processed.messages"],
        [
            serde_json::json!({"user_id": 7, "processed_content": "Processed: hello", "status": "completed"})
        ]
    );
    assert_eq!(
        by_subject["payment.success"],
        [serde_json::json!({"payment_id": "p1", "charge_id": "ch_p1"})]
    );
    dead_reasons.sort();
    assert_eq!(dead_reasons.len(), 2, "{dead_reasons:?}");
    assert_eq!(dead_reasons[0].0, "bad");
    assert_eq!(dead_reasons[1].0, "big");
    assert!(
        dead_reasons[1].1.ends_with(
            "uncaught exception: PaymentServiceError: the payment service is unavailable"
        ),
        "{dead_reasons:?}"
    );
    let payments = running.subscriber("process-payment");
    assert_eq!(
        (
            payments.acked,
            payments.failed(natsapp_wasm::message::FailureCause::Panic),
            payments.retried,
            payments.dead_lettered
        ),
        (1, 5, 0, 2),
        "p1 acked; big's re-raised error, uncaught, crashed each of its 5 deliveries (redelivered with backoff) and the 5th was its last, so it was dead-lettered, like bad"
    );
    running.stop().await;
}

#[test]
fn a_python_package_with_a_native_extension_is_named_at_build() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("requirements.txt"), "pydantic>=2\n").unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "def handle(data, msg):\n    pass\n",
    )
    .unwrap();
    let (_project, root) = project(
        "native",
        "python",
        dir.path(),
        &["app.py", "requirements.txt"],
    );
    let built = build(&root);
    assert!(!built.status.success());
    let stderr = String::from_utf8_lossy(&built.stderr);
    let expected = "error: requirements.txt: packages with native extensions cannot run in a WebAssembly component (componentize-py bundles Python source only):\n  pydantic-core ships a native extension (pydantic_core/_pydantic_core.cpython-";
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        stderr.contains("put `--no-binary pydantic` and `pydantic>=1.10,<2` in requirements.txt"),
        "{stderr}"
    );
    assert!(!root.join("native.wasm").exists());
}

/// `{"order_id": id, "items": items}` in MessagePack.
fn packed_order(id: &str, items: &[&str]) -> Vec<u8> {
    let str8 = |s: &str| {
        let mut b = vec![0xa0 | s.len() as u8];
        b.extend_from_slice(s.as_bytes());
        b
    };
    let mut out = vec![0x82];
    out.extend(str8("order_id"));
    out.extend(str8(id));
    out.extend(str8("items"));
    out.push(0x90 | items.len() as u8);
    for i in items {
        out.extend(str8(i));
    }
    out
}

/// Runs examples/msgpack/service.toml with `component` on a server: a
/// MessagePack order goes through the handler's parser, a JSON one (which
/// the parser refuses) through the default parser.
async fn msgpack_orders_are_summarised(component: &Path) {
    let server = NatsServer::start();
    let text = std::fs::read_to_string(repo_root().join("examples/msgpack/service.toml"))
        .unwrap()
        .replace("nats://localhost:4222", "{url}")
        .replace("\"msgpack_orders.wasm\"", &format!("{component:?}"));
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let client = server.client().await;
    let mut summaries = subscribe(&client, "orders.summary").await;
    let js = server.jetstream().await;
    let packed = packed_order("o-1", &["a", "b"]);
    js_publish(&js, "orders.packed", packed.clone()).await;
    let json = r#"{"order_id": "o-2", "items": ["c"]}"#;
    js_publish(&js, "orders.packed", json).await;
    let within = std::time::Duration::from_secs(20);
    assert_eq!(
        next_json(&mut summaries, within).await,
        serde_json::json!({"order_id": "o-1", "items": 2, "payload_bytes": packed.len()})
    );
    assert_eq!(
        next_json(&mut summaries, within).await,
        serde_json::json!({"order_id": "o-2", "items": 1, "payload_bytes": json.len()})
    );
    let stats = running.stop().await;
    assert_eq!(stats.subscribers[0].acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_message_parser_with_msgpack_from_requirements() {
    let example = repo_root().join("examples/msgpack/python");
    let (_dir, root) = project(
        "msgpack-orders",
        "python",
        &example,
        &["app.py", "requirements.txt"],
    );
    build_ok(&root);
    msgpack_orders_are_summarised(&root.join("msgpack_orders.wasm")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_message_parser_with_msgpack_from_npm() {
    let example = repo_root().join("examples/msgpack/js");
    let (_dir, root) = project("msgpack-orders", "js", &example, &["handler.js"]);
    // As a user adds a dependency: the project's own node_modules.
    succeeds(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "@msgpack/msgpack@3.1.2",
            ])
            .current_dir(&root),
    );
    build_ok(&root);
    msgpack_orders_are_summarised(&root.join("msgpack_orders.wasm")).await;
}
