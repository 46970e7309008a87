//! The NATS micro-service API: `$SRV.PING` from every replica, the
//! statistics in `$SRV.STATS`, and `<service>.health`.

use crate::kit_service;
use natsapp_wasm_tests::*;
use std::time::Duration;

/// Asks `subject` until `n` replicas (distinct `id`s) have answered: the
/// request is sent again every 200 ms, since a replica that just started
/// may not have its subscription in place yet. Panics after 30 s.
pub(crate) async fn gather(
    client: &async_nats::Client,
    subject: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    let mut by_id = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while by_id.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} replicas answered {subject} in 30 s",
            by_id.len()
        );
        client
            .publish_with_reply(subject.to_string(), inbox.clone(), "".into())
            .await
            .unwrap();
        let round = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(m)) = tokio::time::timeout_at(round, answers.next()).await {
            // The server's "no responders" status is not an answer.
            if m.status.is_some() {
                continue;
            }
            let answer: serde_json::Value =
                serde_json::from_slice(&m.payload).expect("a JSON answer");
            by_id.insert(answer["id"].to_string(), answer);
        }
    }
    by_id.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_ping_and_stats_carries_their_figures() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &kit_service(""));
    let (a, b) = (Running::start(&file).await, Running::start(&file).await);
    let client = server.client().await;
    let pings = gather(&client, "$SRV.PING.kit-service", 2).await;
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert_ne!(pings[0]["id"], pings[1]["id"]);
    for p in &pings {
        assert_eq!(p["name"], "kit-service");
        assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
    }
    let infos = gather(&client, "$SRV.INFO.kit-service", 2).await;
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
    let stats = gather(&client, "$SRV.STATS.kit-service", 2).await;
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
    // Until the endpoint's subscription has reached the server, a request
    // finds no responders (and is not counted).
    let answer = eventually(
        Duration::from_secs(30),
        "kit-service.health to answer",
        || async { client.request("kit-service.health", "".into()).await.ok() },
    )
    .await;
    let health: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(health["service"], "kit-service");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["stats"]["connection_status"], "connected");
    assert_eq!(health["stats"]["subscribers"][0]["name"], "kit");
    let stats = gather(&client, "$SRV.STATS.kit-service", 1).await;
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
    let ping = ops.request("$SRV.PING.kit-service", "".into()).await;
    assert!(
        matches!(&ping, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "no endpoint answers for this user: {ping:?}"
    );
    assert_eq!(running.stats.snapshot().connection_status, "connected");
}
