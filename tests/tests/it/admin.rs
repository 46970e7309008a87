//! The admin endpoint: `/metrics` scraped and validated by promtool,
//! `/healthz`, and `/readyz` through a service's life.

use crate::kit_service;
use natsapp_wasm_tests::*;
use std::time::Duration;

/// The kit service with its admin endpoint on a port the system picks.
fn with_admin(extra: &str) -> String {
    kit_service(extra).replacen(
        "graceful_timeout = \"5s\"",
        "graceful_timeout = \"5s\"\nadmin = \"127.0.0.1:0\"",
        1,
    )
}

/// Runs `promtool check metrics` on `exposition`; its complaints, if any.
fn promtool_check(exposition: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run ./scripts/install-prereqs.sh (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_statistics_count_and_pass_promtool() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &(crate::tenants::in_tenant_acme(with_admin(""), "cpu = \"0.5\", memory = \"256MiB\"")
            + "\n[[endpoints]]\nname = \"ask\"\nsubject = \"kit.ask\"\ncomponent = \"{testkit}\"\n"),
    );
    let running = Running::start(&file).await;
    let admin = running.admin.expect("the admin endpoint listens");
    let client = server.client().await;
    let asked = eventually(
        Duration::from_secs(30),
        "the endpoint to answer",
        || async {
            let op = r#"{"op":"respond","data":"yes"}"#;
            client.request("kit.ask", op.into()).await.ok()
        },
    )
    .await;
    assert_eq!(asked.payload, "yes");
    let refused = client
        .request("kit.ask", r#"{"op":"reject","reason":"no"}"#.into())
        .await
        .unwrap();
    assert!(refused.headers.is_some(), "an error answer: {refused:?}");
    let js = server.jetstream().await;
    for _ in 0..3 {
        js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    js_publish(&js, "in.kit", r#"{"op":"reject","reason":"bad order"}"#).await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish","subject":"out.x","data":"y"}"#,
    )
    .await;
    drained(&js, "IN", "kit").await;
    settled_stats(&running, "kit").await;

    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let labels = r#"service="kit-service",subscriber="kit",tenant="acme""#;
    for line in [
        format!("natsapp_messages_received_total{{{labels}}} 5"),
        format!("natsapp_messages_settled_total{{{labels},outcome=\"acked\"}} 4"),
        format!("natsapp_messages_settled_total{{{labels},outcome=\"termed\"}} 1"),
        format!("natsapp_handler_rejects_total{{{labels}}} 1"),
        format!("natsapp_handler_duration_seconds_count{{{labels}}} 5"),
        format!("natsapp_handler_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 5"),
        format!("natsapp_publish_duration_seconds_count{{{labels}}} 1"),
        format!("natsapp_publish_failures_total{{{labels}}} 0"),
        "natsapp_nats_connects_total{service=\"kit-service\",tenant=\"\"} 1".to_string(),
        "natsapp_nats_connects_total{service=\"kit-service\",tenant=\"acme\"} 1".to_string(),
        format!("natsapp_handlers_in_flight{{{labels}}} 0"),
        format!("natsapp_subscriber_running{{{labels}}} 1"),
        "natsapp_nats_connected{service=\"kit-service\"} 1".to_string(),
        "natsapp_endpoint_requests_total{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 2"
            .to_string(),
        "natsapp_endpoint_errors_total{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 1"
            .to_string(),
        // Its handler's figures, as a subscriber's: two calls, one reject,
        // none running, one warm instance kept.
        "natsapp_endpoint_handler_duration_seconds_count{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 2"
            .to_string(),
        "natsapp_endpoint_handler_rejects_total{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 1"
            .to_string(),
        "natsapp_endpoint_handlers_in_flight{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 0"
            .to_string(),
        "natsapp_endpoint_warm_instances{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} 1"
            .to_string(),
        "natsapp_tenant_cpu_quota_cores{service=\"kit-service\",tenant=\"acme\"} 0.5".to_string(),
        "natsapp_tenant_memory_quota_bytes{service=\"kit-service\",tenant=\"acme\"} 268435456"
            .to_string(),
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "no line {line:?} in:\n{body}"
        );
    }
    let endpoint_cpu: f64 = body
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "natsapp_endpoint_guest_cpu_seconds_total{service=\"kit-service\",endpoint=\"ask\",tenant=\"\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no guest CPU of the endpoint in:\n{body}"))
        .parse()
        .unwrap();
    assert!(
        endpoint_cpu > 0.0,
        "the endpoint's guests ran: {endpoint_cpu} s"
    );
    let loaded: u64 = body
        .lines()
        .filter(|l| l.starts_with("natsapp_components_loaded_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        loaded, 2,
        "the testkit component of the subscriber and of the endpoint, from the cache or compiled:\n{body}"
    );
    if let Err(said) = promtool_check(&body) {
        panic!("promtool check metrics: {said}\n{body}");
    }

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(
        http_get(admin, "/readyz").await,
        (200, "ready\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_the_process_drains_and_healthz_stays_200() {
    let server = NatsServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The handler waits at a gate, so the graceful stop lasts until the
    // test has seen /readyz during it.
    let file = ServiceFile::new(
        &server,
        &with_admin("limits = { timeout = \"120s\" }")
            .replace("127.0.0.1:0", &admin.to_string())
            .replace("graceful_timeout = \"5s\"", "graceful_timeout = \"120s\""),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[]);
    let js = server.jetstream().await;
    let mut gate = Gate::new(&server.client().await).await;
    durable_exists(&js, "IN", "kit").await;
    assert_eq!(
        http_get(admin, "/readyz").await,
        (200, "ready\n".to_string())
    );
    js_publish(&js, "in.kit", GATED).await;
    gate.arrived(1).await;
    sigterm(&child);
    let (status, body) = eventually(Duration::from_secs(30), "/readyz to turn", || async {
        let answer = http_get(admin, "/readyz").await;
        (answer.0 != 200).then_some(answer)
    })
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "not ready: shutting down: no new messages are pulled\n"
        )
    );
    assert_eq!(
        http_get(admin, "/healthz").await.0,
        200,
        "the process still serves"
    );
    gate.open().await;
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_in_use_is_a_configuration_error() {
    let server = NatsServer::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let file = ServiceFile::new(&server, &with_admin("").replace("127.0.0.1:0", &addr));
    let err = match natsapp_wasm::Service::start(file.config()).await {
        Ok(_) => panic!("started with {addr} taken"),
        Err(e) => e,
    };
    assert!(
        err.to_string()
            .starts_with(&format!("service.admin: cannot listen on {addr}: ")),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}
