//! Hot reload: SIGHUP, `natsapp-wasm reload` and the library's reloader
//! move a running service to a new file and components, or refuse and keep
//! the old one.

use natsapp_wasm_tests::{
    consumer_counts, drained, eventually, guests, js_publish, natsapp_bin, sighup, sigterm,
    spawn_run, stream_messages, succeeds, wait_exit, NatsServer, Running, ServiceFile,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// One subscriber running `handler.wasm` beside the file on `in.swap`;
/// outputs to stream OUT.
const SWAP: &str = r#"
[service]
name = "swap"
graceful_timeout = "5s"

[nats]
servers = ["{url}"]

[[streams]]
name = "IN"
subjects = ["in.>"]

[[streams]]
name = "OUT"
subjects = ["out.>"]

[[subscribers]]
name = "swap"
component = "handler.wasm"
subject = "in.swap"
stream = "IN"
durable = "swap"
concurrency = 8
publish = ["out.swap", "testkit.out.>"]
config = { output = "out.swap" }
"#;

/// Replaces `dir/handler.wasm` with `component` the way a deploy does:
/// written beside it, then renamed over it.
fn deploy(dir: &std::path::Path, component: &str) {
    let staged = dir.join("handler.wasm.new");
    std::fs::copy(component, &staged).unwrap();
    std::fs::rename(&staged, dir.join("handler.wasm")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_component_under_load_losing_nothing() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, SWAP);
    let dir = file.path().parent().unwrap().to_path_buf();
    deploy(&dir, guests::ECHO);
    let log = dir.join("run.log");
    let mut child = spawn_run(&file, &log, &[]);
    let js = server.jetstream().await;
    natsapp_wasm_tests::durable_exists(&js, "IN", "swap").await;

    // v1 (echo) republishes the input; v2 (testkit) publishes its `data`.
    const N: usize = 1000;
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let input = format!(r#"{{"op":"publish","subject":"out.swap","data":"out {i}"}}"#);
                js_publish(&js, "in.swap", input).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    eventually(Duration::from_secs(30), "v1 outputs", || async {
        (stream_messages(&js, "OUT").await >= 200).then_some(())
    })
    .await;
    deploy(&dir, guests::TESTKIT);
    sighup(&child);
    publisher.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stream_messages(&js, "OUT").await < N as u64 {
        if std::time::Instant::now() > deadline {
            sigterm(&child);
            wait_exit(&mut child, Duration::from_secs(20));
            panic!(
                "{} of {N} outputs after 60s; consumer {:?}; the log:\n{}",
                stream_messages(&js, "OUT").await,
                consumer_counts(&js, "IN", "swap").await,
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drained(&js, "IN", "swap").await;

    let out = js.get_stream("OUT").await.unwrap();
    let mut versions = Vec::new();
    let mut seen = BTreeMap::new();
    for seq in 1..=stream_messages(&js, "OUT").await {
        let m = out.get_raw_message(seq).await.unwrap();
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let (version, data) = if text.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            (1, v["data"].as_str().unwrap().to_string())
        } else {
            (2, text)
        };
        versions.push(version);
        *seen.entry(data).or_insert(0) += 1;
    }
    assert_eq!(versions.len(), N, "one output per input, none duplicated");
    assert_eq!(seen.len(), N, "every input has its output");
    assert!(seen.values().all(|&n| n == 1), "no input has two outputs");
    let switch = versions.iter().position(|&v| v == 2).expect("v2 outputs");
    assert!(switch > 0, "v1 ran first");
    assert!(
        versions[switch..].iter().all(|&v| v == 2),
        "once v2 runs, no v1 output follows: {:?}",
        &versions[switch.saturating_sub(3)..(switch + 10).min(N)]
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("SIGHUP received"), "{log}");
    assert!(
        log.contains("reload applied: added none; replaced swap; removed none; unchanged none"),
        "{log}"
    );
    assert!(
        log.contains("retired: its in-flight messages are settled"),
        "{log}"
    );
}

/// The kit service of `main.rs` with a second subscriber `b` on `in.b`.
fn with_b(service: &str) -> String {
    format!(
        r#"{service}
[[subscribers]]
name = "b"
component = "{{testkit}}"
subject = "in.b"
stream = "IN"
durable = "b"
publish = ["out.>", "testkit.out.>"]
"#
    )
}

/// `service` without its subscriber `kit`.
fn without_kit(service: &str) -> String {
    let start = service
        .find("[[subscribers]]\nname = \"kit\"")
        .expect("a kit subscriber");
    let end = start
        + 1
        + service[start + 1..]
            .find("[[subscribers]]")
            .expect("another subscriber");
    format!("{}{}", &service[..start], &service[end..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_or_component_is_refused_and_the_old_configuration_keeps_running() {
    let server = NatsServer::start();
    let good = crate::kit_service("");
    let file = ServiceFile::new(&server, &good);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;

    let path = file.path().display().to_string();
    let refusals = [
        (
            "[service\nname = 1".to_string(),
            format!("{path}:1:9: unclosed table"),
        ),
        (
            good.replace("{testkit}", "{not_a_handler}"),
            "(subscriber \"kit\"): does not export natsapp:handler/handler@0.1.3".to_string(),
        ),
        (
            good.replace("graceful_timeout = \"5s\"", "graceful_timeout = \"6s\""),
            format!("{path}: [service] changed; restart the service to apply it"),
        ),
        // A subscriber on a stream that does not exist and is not declared.
        (
            with_b(&good).replace(
                "stream = \"IN\"\ndurable = \"b\"",
                "stream = \"NOPE\"\ndurable = \"b\"",
            ),
            "stream \"NOPE\" (stream of subscriber \"b\") is neither declared in [[streams]] nor present on the server".to_string(),
        ),
    ];
    for (text, expected) in &refusals {
        file.write(&server, "service.toml", text);
        let e = running.reloader.reload().await.unwrap_err();
        let e = natsapp_wasm::error::ErrorChain(e.as_ref()).to_string();
        assert!(
            e.contains(expected.as_str()),
            "expected {expected:?} in: {e}"
        );
    }

    let snapshot = running.stats.snapshot();
    assert_eq!((snapshot.reloads_applied, snapshot.reloads_refused), (0, 4));
    assert_eq!(snapshot.total_subscribers, 1, "b was not added");
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish","subject":"out.kept","data":"x"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 1).await;
    drained(&js, "IN", "kit").await;
    assert_eq!(running.subscriber("kit").acked, 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_come_and_go_and_a_removed_one_settles_its_in_flight_message() {
    let server = NatsServer::start();
    let one = crate::kit_service("");
    let file = ServiceFile::new(&server, &one);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;

    // Over NATS, as `natsapp-wasm reload` asks every replica.
    file.write(&server, "service.toml", &with_b(&one));
    let out = succeeds(
        std::process::Command::new(natsapp_bin()).args(["reload", file.path().to_str().unwrap()]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kit-service")
            && stdout.contains(": applied: added b; replaced none; removed none; unchanged kit"),
        "{stdout}"
    );
    js_publish(
        &js,
        "in.b",
        r#"{"op":"publish","subject":"out.b","data":"b1"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 1).await;
    drained(&js, "IN", "b").await;

    // kit is removed while its handler sleeps: the message still settles.
    js_publish(&js, "in.kit", r#"{"op":"sleep","ms":1500}"#).await;
    eventually(Duration::from_secs(10), "kit's handler running", || async {
        (running.subscriber("kit").in_flight == 1).then_some(())
    })
    .await;
    file.write(&server, "service.toml", &without_kit(&with_b(&one)));
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.removed, ["kit"]);
    assert_eq!(summary.unchanged, ["b"]);
    eventually(Duration::from_secs(10), "kit retired", || async {
        running.stats.subscriber("kit").is_none().then_some(())
    })
    .await;
    assert_eq!(
        consumer_counts(&js, "IN", "kit").await,
        (0, 0),
        "the in-flight message was acked before kit was retired"
    );
    js_publish(
        &js,
        "in.b",
        r#"{"op":"publish","subject":"out.b","data":"b2"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 2).await;
    let snapshot = running.stop().await;
    assert_eq!(snapshot.reloads_applied, 2);
    assert_eq!(snapshot.total_subscribers, 1);
    assert_eq!(snapshot.subscribers[0].name, "b");
    assert_eq!(snapshot.subscribers[0].acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_comes_and_goes_with_its_included_file() {
    let server = NatsServer::start();
    let base = crate::kit_service("").replacen(
        "[service]\n",
        "[service]\ninclude = [\"tenants/*.toml\"]\n",
        1,
    );
    let file = ServiceFile::new(&server, &base);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    let acme = r#"
[[tenants]]
name = "acme"
quotas = { concurrency = 4 }

[[subscribers]]
name = "b"
tenant = "acme"
component = "{testkit}"
subject = "in.b"
stream = "IN"
durable = "b"
publish = ["out.>", "testkit.out.>"]
"#;
    file.write(&server, "tenants/acme.toml", acme);
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.added, ["b"]);
    assert_eq!(summary.tenants_opened, ["acme"]);
    let snapshot = running.stats.snapshot();
    assert_eq!(snapshot.tenants.len(), 1);
    assert!(
        snapshot
            .connections
            .iter()
            .any(|c| c.tenant.as_deref() == Some("acme")),
        "{:?}",
        snapshot.connections
    );
    js_publish(
        &js,
        "in.b",
        r#"{"op":"publish","subject":"out.b","data":"acme"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 1).await;
    drained(&js, "IN", "b").await;
    assert_eq!(running.subscriber("b").tenant.as_deref(), Some("acme"));

    // New quotas: a new connection for acme, b moved onto it.
    file.write(
        &server,
        "tenants/acme.toml",
        &acme.replace("concurrency = 4", "concurrency = 2"),
    );
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.replaced, ["b"]);
    assert_eq!(
        (
            summary.tenants_opened.as_slice(),
            summary.tenants_closed.as_slice()
        ),
        (&["acme".to_string()][..], &["acme".to_string()][..])
    );
    js_publish(
        &js,
        "in.b",
        r#"{"op":"publish","subject":"out.b","data":"acme2"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 2).await;
    drained(&js, "IN", "b").await;
    assert_eq!(running.subscriber("b").acked, 2, "b's figures carry on");
    // The old connection drains and closes within moments; through it and
    // after, the new one stays counted.
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        let snapshot = running.stats.snapshot();
        assert_eq!(
            snapshot
                .tenants
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["acme"],
            "closing the old connection keeps the new one counted"
        );
        assert_eq!(snapshot.connections.len(), 2, "{:?}", snapshot.connections);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::remove_file(file.path().with_file_name("tenants/acme.toml")).unwrap();
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.removed, ["b"]);
    assert_eq!(summary.tenants_closed, ["acme"]);
    eventually(Duration::from_secs(10), "acme closed", || async {
        let s = running.stats.snapshot();
        (s.tenants.is_empty() && s.connections.len() == 1).then_some(())
    })
    .await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish","subject":"out.kit","data":"own"}"#,
    )
    .await;
    natsapp_wasm_tests::stream_has(&js, "OUT", 3).await;
    running.stop().await;
}
