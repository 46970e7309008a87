//! The README's demo: starts a nats-server, runs `natsapp-wasm run
//! examples/order-processor/service.toml` against it, publishes a few
//! orders (one invalid), prints what the handler produced, then stops the
//! runtime with SIGTERM. Run it with ./scripts/demo.sh, which builds the
//! runtime and the handler first.

use nats_test_server::streams::*;
use nats_test_server::NatsServer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(3)
        .expect("examples/order-processor/demo is three folders down")
        .to_path_buf()
}

/// The natsapp-wasm binary built beside this one.
fn natsapp_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the demo's own path");
    let bin = exe.with_file_name("natsapp-wasm");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p natsapp-wasm` (./scripts/demo.sh does)",
        bin.display()
    );
    bin
}

#[tokio::main]
async fn main() {
    let server = NatsServer::start();
    println!("== nats-server with JetStream on {}", server.url());
    let example = repo_root().join("examples/order-processor/service.toml");
    println!("== natsapp-wasm run {}", example.display());
    let mut runtime = Command::new(natsapp_bin())
        .arg("run")
        .arg(&example)
        .env("NATS_SERVERS", server.url())
        .spawn()
        .expect("start natsapp-wasm");
    let js = server.jetstream().await;
    durable_exists(&js, "ORDER_EVENTS", "order_processor_service").await;

    let orders = [
        r#"{"order_id":"1001","user_id":"u-1","total_amount":59.90,"items":[{"id":"sku-red","quantity":2},{"id":"sku-blue","quantity":1}]}"#,
        r#"{"order_id":"1002","user_id":"u-2","total_amount":12.00,"items":[{"id":"sku-green","quantity":5}]}"#,
        r#"{"order_id":"1003","user_id":"u-3","total_amount":7.50,"items":[{"id":"sku-red","quantity":1}]}"#,
        r#"{"order_id":"1004","user_id":"u-1","total_amount":99.00,"items":[{"id":"sku-blue","quantity":3}]}"#,
        r#"{"order_id":"1005","items":"this order is invalid"}"#,
    ];
    for o in orders {
        js_publish(&js, "order.created", o).await;
        println!("-> order.created {o}");
    }
    stream_has(&js, "ORDER_STATUS", 4).await;
    stream_has(&js, "INVENTORY", 5).await;
    stream_has(&js, "DEAD_LETTERS", 1).await;
    drained(&js, "ORDER_EVENTS", "order_processor_service").await;

    for (stream, n) in [("INVENTORY", 5), ("ORDER_STATUS", 4)] {
        for v in json_messages(&js, stream, n).await {
            println!("<- {stream:<13} {v}");
        }
    }
    let dl = js
        .get_stream("DEAD_LETTERS")
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    println!(
        "<- DEAD_LETTERS  {} (reason: {})",
        String::from_utf8_lossy(&dl.payload),
        dl.headers
            .get("Natsapp-Reason")
            .map(|v| v.as_str())
            .unwrap_or("?")
    );
    let consumer = consumer_counts(&js, "ORDER_EVENTS", "order_processor_service").await;
    println!(
        "== consumer order_processor_service: {} pending, {} awaiting ack",
        consumer.0, consumer.1
    );

    println!("== stopping the runtime with SIGTERM");
    // SAFETY: kill has no memory effects; the pid is our child's.
    assert_eq!(unsafe { libc::kill(runtime.id() as i32, libc::SIGTERM) }, 0);
    let status = runtime.wait().expect("wait for natsapp-wasm");
    println!("== natsapp-wasm exited with {status}");
    std::process::exit(if status.success() { 0 } else { 1 });
}
