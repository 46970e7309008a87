//! Endpoints across a reload: removed from INFO with it, counting on
//! from a predecessor, and never leaving a request without a responder.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_an_endpoint_removes_it_from_info() {
    let server = NatsServer::start();
    let two = format!(
        "{ENDPOINT}\n[[endpoints]]\nname = \"stock\"\nsubject = \"pricing.stock\"\ncomponent = \"{{testkit}}\"\n"
    );
    let file = ServiceFile::new(&server, &two);
    let running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.stock").await;
    let info = gather(&client, "$SRV.INFO.pricing", 1).await;
    assert_eq!(listed(&info[0]), ["health", "quote", "stock"]);

    file.write(&server, "service.toml", ENDPOINT);
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.removed, ["stock"], "{summary}");
    assert_eq!(summary.unchanged, ["quote"], "{summary}");
    let info = gather(&client, "$SRV.INFO.pricing", 1).await;
    assert_eq!(listed(&info[0]), ["health", "quote"]);
    eventually(
        Duration::from_secs(10),
        "no responder for pricing.stock",
        || async {
            match client.request("pricing.stock", "{}".into()).await {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let (payload, _) = ask(&client, "pricing.quote", r#"{"op":"reply","data":"still"}"#).await;
    assert_eq!(payload, "still");
}

/// Waits until the `quote` endpoint's figures in `$SRV.STATS` (requests,
/// errors and the last error) are `expected`: a request is counted just
/// after its answer is sent.
async fn quote_stats_become(client: &async_nats::Client, expected: (u64, u64, &str), why: &str) {
    let mut last = None;
    for _ in 0..100 {
        let quote = quote_in_stats(client).await;
        let got = (
            quote["num_requests"].as_u64().unwrap(),
            quote["num_errors"].as_u64().unwrap(),
            quote["last_error"].as_str().unwrap_or_default().to_string(),
        );
        if (got.0, got.1, got.2.as_str()) == expected {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{why}: $SRV.STATS counts {last:?}, not {expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_endpoint_keeps_counting_where_its_predecessor_stopped() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    ask(&client, "pricing.quote", r#"{"op":"reject","reason":"no"}"#).await;
    quote_stats_become(&client, (2, 1, "400:no"), "the probe and the reject").await;

    file.write(
        &server,
        "service.toml",
        &ENDPOINT.replace("concurrency = 2", "concurrency = 3"),
    );
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(summary.replaced, ["quote"], "{summary}");
    let (answer, error) = ask(&client, "pricing.quote", r#"{"op":"reply","data":"new"}"#).await;
    assert_eq!((answer.as_str(), error), ("new", None));
    quote_stats_become(
        &client,
        (3, 1, "400:no"),
        "the replacement counts on from its predecessor's figures",
    )
    .await;
    assert_eq!(
        counted(&running),
        [("quote".into(), 3, 1)],
        "and so do the statistics and /metrics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_replacement_always_find_a_responder() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    // Four requesters ask one request after another while the endpoint is
    // replaced three times: the successor joins the queue group before its
    // predecessor leaves it, so not one request finds no responder.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requesters: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut refused) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client
                        .request("pricing.quote", r#"{"op":"reply","data":"up"}"#.into())
                        .await
                    {
                        Ok(a) if a.payload.as_ref() == b"up" => answered += 1,
                        Ok(a) => refused.push(format!("{:?} {:?}", a.headers, a.payload)),
                        Err(e) => refused.push(e.to_string()),
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    for concurrency in 3..=5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        file.write(
            &server,
            "service.toml",
            &ENDPOINT.replace("concurrency = 2", &format!("concurrency = {concurrency}")),
        );
        let summary = running.reloader.reload().await.unwrap();
        assert_eq!(summary.replaced, ["quote"], "{summary}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for r in requesters {
        let (a, refused) = r.await.unwrap();
        assert!(
            refused.is_empty(),
            "requests not answered through the replacements: {refused:?}"
        );
        answered += a;
    }
    assert!(answered > 20, "only {answered} requests answered in 1.2 s");
}
