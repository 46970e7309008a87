//! The NATS micro-service API: `$SRV.PING` from every replica, the
//! statistics in `$SRV.STATS`, and `<service>.health`.

use crate::kit_service;
use natsapp_wasm_tests::*;
use std::time::Duration;

/// Sends `subject` a request and gathers every answer for `within`.
async fn gather(
    client: &async_nats::Client,
    subject: &str,
    within: Duration,
) -> Vec<serde_json::Value> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(m)) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut answers)).await
    {
        // The server's "no responders" status is not an answer.
        if m.status.is_some() {
            continue;
        }
        out.push(serde_json::from_slice(&m.payload).expect("a JSON answer"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_ping_and_stats_carries_their_figures() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &kit_service(""));
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    let client = server.client().await;
    let pings = gather(&client, "$SRV.PING.kit-service", Duration::from_millis(500)).await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_ne!(pings[0]["id"], pings[1]["id"]);
    for p in &pings {
        assert_eq!(p["name"], "kit-service");
        assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    }
    let infos = gather(&client, "$SRV.INFO.kit-service", Duration::from_millis(500)).await;
    assert_eq!(infos.len(), 2, "{infos:?}");
    assert_eq!(infos[0]["endpoints"][0]["subject"], "kit-service.health");
    assert!(
        infos[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("natsapp-wasm "),
        "{infos:?}"
    );

    let js = server.jetstream().await;
    for _ in 0..10 {
        js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    drained(&js, "IN", "kit").await;
    settled_stats(&a, "kit").await;
    settled_stats(&b, "kit").await;
    let stats = gather(
        &client,
        "$SRV.STATS.kit-service",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(stats.len(), 2, "{stats:?}");
    let mut acked = 0;
    for s in &stats {
        let endpoint = &s["endpoints"][0];
        assert_eq!(
            (&endpoint["name"], &endpoint["subject"]),
            (&"health".into(), &"kit-service.health".into())
        );
        let kit = &endpoint["data"]["subscribers"][0];
        assert_eq!(kit["name"], "kit", "{s}");
        acked += kit["acked"].as_u64().unwrap();
    }
    assert_eq!(acked, 10, "the two replicas' acks add up: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_with_status_and_statistics_and_is_counted() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &kit_service(""));
    let _running = Running::start(&file).await;
    let client = server.client().await;
    let answer = client
        .request("kit-service.health", "".into())
        .await
        .expect("kit-service.health answers");
    let health: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(health["service"], "kit-service");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["stats"]["connection_status"], "connected");
    assert_eq!(health["stats"]["subscribers"][0]["name"], "kit");
    let stats = gather(
        &client,
        "$SRV.STATS.kit-service",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(stats[0]["endpoints"][0]["num_requests"], 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_not_allowed_the_endpoints_still_serves_its_messages() {
    // The service's user may subscribe to its inboxes only: the server
    // refuses the $SRV and health subscriptions, which must not stop it.
    let server = NatsServer::with_config(
        r#"
accounts {
  APP: {
    jetstream: enabled
    users: [
      { user: svc, password: svc, permissions: { publish: { allow: [">"] }, subscribe: { allow: ["_INBOX.>"] } } }
      { user: ops, password: ops }
    ]
  }
}
"#,
    );
    let file = ServiceFile::new(
        &server,
        &kit_service("").replace("[nats]\n", "[nats]\nuser = \"svc\"\npassword = \"svc\"\n"),
    );
    let running = Running::start(&file).await;
    let ops = async_nats::ConnectOptions::with_user_and_password("ops".into(), "ops".into())
        .connect(server.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(ops.clone());
    for _ in 0..5 {
        js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(s.acked, 5, "{s:?}");
    assert!(
        gather(&ops, "$SRV.PING.kit-service", Duration::from_millis(300))
            .await
            .is_empty(),
        "no endpoint answers for this user"
    );
    assert_eq!(running.stats.snapshot().connection_status, "connected");
}
