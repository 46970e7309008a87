//! `[[endpoints]]`: core NATS requests answered by a component in a queue
//! group, listed and counted by the service's micro-service; every outcome
//! of the handler answered with its status, at once.

use crate::micro::gather;
use futures::StreamExt;
use natsapp_wasm_tests::*;
use std::time::Duration;

mod replacing;

const ENDPOINT: &str = r#"
[service]
name = "pricing"
graceful_timeout = "2s"

[nats]
servers = ["{url}"]

[[endpoints]]
name = "quote"
subject = "pricing.quote"
component = "{testkit}"
concurrency = 2
limits = { timeout = "2s" }
"#;

/// Sends `op` as a request to `subject`; the answer's payload and its
/// micro-service error code and description, when it has them.
async fn ask(
    client: &async_nats::Client,
    subject: &str,
    op: &str,
) -> (String, Option<(String, String)>) {
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(subject.to_string(), op.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {op} in 30 s"))
    .unwrap_or_else(|e| panic!("{op}: {e}"));
    let error = answer.headers.as_ref().and_then(|h| {
        let code = h.get("Nats-Service-Error-Code")?.to_string();
        let description = h
            .get("Nats-Service-Error")
            .map(|d| d.to_string())
            .unwrap_or_default();
        Some((code, description))
    });
    (String::from_utf8_lossy(&answer.payload).into_owned(), error)
}

/// The names of the endpoints an `$SRV.INFO` answer lists, sorted.
fn listed(info: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Waits until requests to `subject` find a responder.
async fn serving(client: &async_nats::Client, subject: &str) {
    eventually(Duration::from_secs(30), "the endpoint to serve", || async {
        client
            .request(subject.to_string(), r#"{"op":"reply","data":"up"}"#.into())
            .await
            .ok()
    })
    .await;
}

/// The `quote` endpoint's entry in `$SRV.STATS`.
async fn quote_in_stats(client: &async_nats::Client) -> serde_json::Value {
    let stats = gather(client, "$SRV.STATS.pricing", 1).await;
    stats[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "quote")
        .cloned()
        .unwrap_or_else(|| panic!("quote in {stats:?}"))
}

/// Each endpoint's requests and errors in the service's statistics (and
/// so in /metrics).
fn counted(running: &Running) -> Vec<(String, u64, u64)> {
    let endpoints = running.stats.snapshot().endpoints;
    (endpoints.iter())
        .map(|e| (e.name.clone(), e.requests, e.errors))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_of_the_handler_is_answered_with_its_status() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;

    let error = |code: &str, description: &str| Some((code.to_string(), description.to_string()));
    let cases = [
        (r#"{"op":"reply","data":"42.5"}"#, "42.5", None),
        (
            r#"{"op":"reject","reason":"unknown sku"}"#,
            "",
            error("400", "unknown sku"),
        ),
        (
            r#"{"op":"retry","delay_ms":100}"#,
            "",
            error("503", "asked to retry"),
        ),
        (
            r#"{"op":"panic","message":"boom"}"#,
            "",
            error("500", "handler crashed"),
        ),
        (r#"{"op":"spin"}"#, "", error("500", "handler timed out")),
        (r#"{"op":"ok"}"#, "", error("500", "no response")),
    ];
    for (op, payload, expected) in cases {
        let (got, got_error) = ask(&client, "pricing.quote", op).await;
        assert_eq!((got.as_str(), got_error), (payload, expected), "{op}");
    }

    // A request is not a JetStream delivery: the guest's own ack is
    // refused, and the error it returns answers the request.
    let (_, got) = ask(
        &client,
        "pricing.quote",
        r#"{"op":"ack","then_fail":false}"#,
    )
    .await;
    let (code, description) = got.expect("an error answer");
    assert_eq!(code, "400", "a denied call rejects: {description}");
    assert!(
        description.contains("is not a JetStream delivery: there is nothing to acknowledge"),
        "{description}"
    );

    // A message without a reply subject is handled, and no error.
    client
        .publish("pricing.quote", r#"{"op":"ok"}"#.into())
        .await
        .unwrap();
    // The probe, the six cases, the ack and the message without a reply.
    let stats = eventually(Duration::from_secs(10), "the message counted", || async {
        let quote = quote_in_stats(&client).await;
        (quote["num_requests"] == 9).then_some(quote)
    })
    .await;
    assert_eq!(stats["num_errors"], 6, "{stats}");
    assert_eq!(stats["last_error"], "400:denied: a request to endpoint \"quote\" is not a JetStream delivery: there is nothing to acknowledge; answer it with respond or a publish to its reply subject, or fail to send an error answer", "{stats}");
    assert_eq!(stats["subject"], "pricing.quote");
    assert_eq!(
        stats["queue_group"], "pricing",
        "the service's name by default"
    );
    // The statistics (and so /metrics) count the same.
    assert_eq!(counted(&running), [("quote".into(), 9, 6)]);

    let info = gather(&client, "$SRV.INFO.pricing", 1).await;
    let listed: Vec<_> = info[0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].clone(), e["subject"].clone()))
        .collect();
    assert!(
        listed.contains(&("quote".into(), "pricing.quote".into())),
        "{info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_waiting_places_are_answered_503_at_once() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &ENDPOINT
            .replace("concurrency = 2", "concurrency = 1\nmax_waiting = 1")
            .replace(
                r#"limits = { timeout = "2s" }"#,
                r#"limits = { timeout = "30s" }"#,
            ),
    );
    let _running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    // One handled, one waiting; the third finds no place.
    let mut answers = futures::stream::FuturesUnordered::new();
    for i in 0..3 {
        let client = client.clone();
        answers.push(async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(200 * i)).await;
            }
            let op = r#"{"op":"reply","data":"slow","after_ms":1500}"#;
            (i, ask(&client, "pricing.quote", op).await)
        });
    }
    let mut order = Vec::new();
    while let Some((i, (_, error))) = answers.next().await {
        order.push((i, error.map(|(code, _)| code)));
    }
    assert_eq!(
        order,
        [(2, Some("503".to_string())), (0, None), (1, None)],
        "the refused request is answered first, before the first one finishes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_in_one_queue_group_answer_1000_concurrent_requests() {
    const REQUESTS: usize = 1000;
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let (_a, _b) = (Running::start(&file).await, Running::start(&file).await);
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    gather(&client, "$SRV.PING.pricing", 2).await;
    let requests = (0..REQUESTS).map(|i| {
        let client = client.clone();
        async move {
            let op = format!(r#"{{"op":"reply","data":"{i}"}}"#);
            ask(&client, "pricing.quote", &op).await
        }
    });
    let answers = futures::future::join_all(requests).await;
    for (i, (payload, error)) in answers.iter().enumerate() {
        assert_eq!((payload.as_str(), error), (i.to_string().as_str(), &None));
    }
    let stats = gather(&client, "$SRV.STATS.pricing", 2).await;
    let counted: Vec<u64> = stats
        .iter()
        .map(|s| {
            let quote = s["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "quote")
                .unwrap();
            assert_eq!(quote["num_errors"], 0, "{quote}");
            quote["num_requests"].as_u64().unwrap()
        })
        .collect();
    // The probes before the burst are counted too.
    assert!(
        counted.iter().sum::<u64>() >= REQUESTS as u64 && counted.iter().all(|n| *n > 0),
        "both replicas took a share: {counted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_in_every_language_answer_with_respond() {
    let server = NatsServer::start();
    let kits = [
        ("rust", guests::TESTKIT),
        ("python", guests::PY_KIT),
        ("js", guests::JS_KIT),
        ("c", guests::C_KIT),
    ];
    let mut file = String::from("[service]\nname = \"langs\"\n\n[nats]\nservers = [\"{url}\"]\n");
    for (lang, component) in kits {
        file.push_str(&format!(
            "\n[[endpoints]]\nname = \"{lang}\"\nsubject = \"ask.{lang}\"\ncomponent = \"{component}\"\n"
        ));
    }
    let file = ServiceFile::new(&server, &file);
    let _running = Running::start(&file).await;
    let client = server.client().await;
    for (lang, _) in kits {
        let subject = format!("ask.{lang}");
        let op = format!(r#"{{"op":"respond","data":"from {lang}"}}"#);
        let answer = eventually(Duration::from_secs(30), "an answer", || async {
            client
                .request(subject.clone(), op.clone().into())
                .await
                .ok()
        })
        .await;
        assert_eq!(
            String::from_utf8_lossy(&answer.payload),
            format!("from {lang}"),
            "{lang}"
        );
        let headers = answer.headers.expect("headers");
        assert_eq!(
            headers.get("X-Answered-By").map(|v| v.as_str()),
            Some(lang),
            "{lang}"
        );
        assert!(
            headers.get("Nats-Service-Error-Code").is_none(),
            "{lang}: {headers:?}"
        );
    }
    // A component built against 0.1.0, before respond, runs as an endpoint
    // too: it publishes elsewhere and returns, so the runtime answers.
    let old = ServiceFile::new(
        &server,
        &format!(
            "[service]\nname = \"old\"\n\n[nats]\nservers = [\"{{url}}\"]\n\n[[endpoints]]\nname = \"old\"\nsubject = \"ask.old\"\ncomponent = \"{}\"\npublish = [\"compat.out\"]\n",
            guests::COMPAT_0_1_0
        ),
    );
    let _old = Running::start(&old).await;
    serving(&client, "ask.old").await;
    let mut out = subscribe(&client, "compat.out").await;
    let (_, error) = ask(&client, "ask.old", "payload").await;
    assert_eq!(error, Some(("500".to_string(), "no response".to_string())));
    let published = tokio::time::timeout(Duration::from_secs(10), out.next())
        .await
        .expect("compat.out within 10 s")
        .unwrap();
    assert_eq!(published.payload, "payload");
}

/// A component built against 0.1.2 (its WIT kept as released in
/// guests/compat-0-1-2/wit), before `warm-up`, answers with `respond` on
/// this runtime, its per-message instances made ahead as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_0_1_2_still_answers() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &format!(
            "[service]\nname = \"old\"\n\n[nats]\nservers = [\"{{url}}\"]\n\n[[endpoints]]\nname = \"old\"\nsubject = \"ask.old\"\ncomponent = \"{}\"\ninstances = \"per-message\"\n",
            guests::COMPAT_0_1_2
        ),
    );
    let _old = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "ask.old").await;
    for n in 0..3 {
        let payload = format!("question {n}");
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            client.request("ask.old", payload.clone().into()),
        )
        .await
        .expect("an answer within 30 s")
        .unwrap();
        assert_eq!(answer.payload, payload);
        let headers = answer.headers.expect("the component's header");
        assert_eq!(headers.get("Compat-Delivered").unwrap().as_str(), "1");
        assert!(headers.get("Nats-Service-Error-Code").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_endpoint_serves_in_its_account_and_its_own_micro_service_lists_it() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let file = ServiceFile::new(
        &server,
        r#"
[service]
name = "platform"

[nats]
servers = ["{url}"]
user = "svc"
password = "svc"

[[tenants]]
name = "acme"
nats = { user = "acme", password = "acme" }

[[endpoints]]
name = "quote"
tenant = "acme"
subject = "acme.quote"
component = "{testkit}"

[[endpoints]]
name = "own"
subject = "platform.ask"
component = "{testkit}"
"#,
    );
    let _running = Running::start(&file).await;
    let connect = |user: &'static str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
            .connect(server.url())
    };
    let (acme, svc) = (
        connect("acme").await.unwrap(),
        connect("svc").await.unwrap(),
    );
    serving(&acme, "acme.quote").await;
    serving(&svc, "platform.ask").await;
    let (payload, _) = ask(
        &acme,
        "acme.quote",
        r#"{"op":"respond","data":"from acme"}"#,
    )
    .await;
    assert_eq!(payload, "from acme");

    let tenants = gather(&acme, "$SRV.INFO.platform", 1).await;
    assert_eq!(listed(&tenants[0]), ["quote"], "{tenants:?}");
    let own = gather(&svc, "$SRV.INFO.platform", 1).await;
    assert_eq!(listed(&own[0]), ["health", "own"], "{own:?}");
    // The tenant's subject is its account's: the service's users cannot reach it.
    let from_svc = svc
        .request("acme.quote", r#"{"op":"respond","data":"x"}"#.into())
        .await;
    assert!(
        matches!(&from_svc, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{from_svc:?}"
    );
}

#[test]
fn check_and_docs_describe_an_endpoint() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let path = file.path();
    let check = succeeds(
        std::process::Command::new(natsapp_bin())
            .arg("check")
            .arg(&path),
    );
    let plan = String::from_utf8_lossy(&check.stdout);
    for line in [
        "endpoints:",
        "  quote: requests on pricing.quote in queue group pricing",
        "    concurrency 2, up to 1024 waiting (then 503), instances reused",
    ] {
        assert!(
            plan.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in:\n{plan}"
        );
    }
    assert!(
        plan.lines().any(|l| l.starts_with("    guest cpu: ")
            && l.ends_with("shared equally by the busy ones of the service's own 1 handler")),
        "{plan}"
    );
    let docs = succeeds(
        std::process::Command::new(natsapp_bin())
            .arg("docs")
            .arg(&path),
    );
    let doc: serde_json::Value = serde_json::from_slice(&docs.stdout).unwrap();
    let operation = &doc["operations"]["quote"];
    assert_eq!(operation["action"], "receive", "{doc}");
    assert_eq!(
        operation["reply"]["channel"]["$ref"], "#/channels/quote-reply",
        "{doc}"
    );
    assert_eq!(
        doc["channels"]["pricing_quote"]["description"],
        "core NATS requests, queue group pricing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_service_answers_every_request_it_took() {
    let server = NatsServer::start();
    // One handler at a time, 2 s of grace: of five requests of 700 ms
    // taken before the stop, two or three finish, the rest are cut at the
    // graceful timeout — and every one is answered.
    let file = ServiceFile::new(
        &server,
        &ENDPOINT
            .replace("concurrency = 2", "concurrency = 1")
            .replace(
                r#"limits = { timeout = "2s" }"#,
                r#"limits = { timeout = "30s" }"#,
            ),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5 {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let op = format!(r#"{{"op":"reply","data":"{i}","after_ms":700}}"#);
            let _ = tx.send(ask(&client, "pricing.quote", &op).await);
        });
    }
    drop(tx);
    // The first answer comes 700 ms after the five requests were sent: by
    // then the other four are in the service, waiting.
    let first = answers.recv().await.unwrap();
    running.stop().await;
    let mut all = vec![first];
    while let Some(a) = answers.recv().await {
        all.push(a);
    }
    let (mut answered, mut cut) = (0, 0);
    for a in all {
        match a {
            (payload, None) if !payload.is_empty() => answered += 1,
            (_, Some((code, description))) => {
                assert_eq!(
                    (code.as_str(), description.as_str()),
                    ("503", "the endpoint is stopping")
                );
                cut += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answered + cut, 5, "every request answered");
    assert!(answered >= 1 && cut >= 1, "{answered} answered, {cut} cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_subject_in_the_systems_namespace_is_never_answered() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, ENDPOINT);
    let _running = Running::start(&file).await;
    let client = server.client().await;
    serving(&client, "pricing.quote").await;
    // A requester naming a $ subject as its reply address would have the
    // runtime publish there with the service's identity.
    let mut system = subscribe(&client, "$X.answers").await;
    for op in [
        r#"{"op":"respond","data":"x"}"#,
        r#"{"op":"reject","reason":"no"}"#,
    ] {
        client
            .publish_with_reply("pricing.quote", "$X.answers", op.into())
            .await
            .unwrap();
    }
    let (payload, _) = ask(&client, "pricing.quote", r#"{"op":"reply","data":"after"}"#).await;
    assert_eq!(payload, "after");
    assert!(
        silent(&mut system, Duration::from_millis(500)).await,
        "nothing is sent to a $ subject"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_deployed_over_nats_serves_on_every_replica_and_follows_its_key() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        "[service]\nname = \"fleet\"\ngraceful_timeout = \"5s\"\ninclude = [{ kv = \"DEPLOY\", keys = \"pricing.>\" }]\n\n[nats]\nservers = [\"{url}\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let log = dir.path().join(format!("replica-{i}.log"));
        replicas.push(spawn_run(&file, &log, &[]));
        logged(&log, "nothing deployed runs yet").await;
    }
    let deploy = |name: &str, extra: &str| {
        let fragment = dir.path().join(name);
        std::fs::write(
            &fragment,
            format!(
                "[[endpoints]]\nname = \"quote\"\nsubject = \"fleet.quote\"\ncomponent = \"{}\"\n{extra}",
                guests::TESTKIT
            ),
        )
        .unwrap();
        succeeds(
            std::process::Command::new(natsapp_bin())
                .args(["deploy", fragment.to_str().unwrap(), "DEPLOY/pricing.quote"])
                .args([
                    "--create",
                    "--wait",
                    "--replicas",
                    "2",
                    "--server",
                    server.url(),
                ]),
        )
    };
    let out = deploy("v1.toml", "");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("every replica (2) applied DEPLOY/pricing.quote revision 1"),
        "{out:?}"
    );
    let client = server.client().await;
    let (payload, _) = ask(&client, "fleet.quote", r#"{"op":"respond","data":"v1"}"#).await;
    assert_eq!(payload, "v1");
    let infos = gather(&client, "$SRV.INFO.fleet", 2).await;
    for info in &infos {
        assert_eq!(listed(info), ["health", "quote"], "{info}");
    }
    // A new revision replaces it on every replica; status names it.
    deploy("v2.toml", "max_waiting = 10\n");
    let status = succeeds(std::process::Command::new(natsapp_bin()).args([
        "status",
        "DEPLOY",
        "--replicas",
        "2",
        "--server",
        server.url(),
    ]));
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        status
            .matches("DEPLOY/pricing.quote  revision 2  quote=")
            .count(),
        2,
        "{status}"
    );
    let (payload, error) = ask(&client, "fleet.quote", r#"{"op":"respond","data":"v2"}"#).await;
    assert_eq!((payload.as_str(), error), ("v2", None));
    for mut replica in replicas {
        sigterm(&replica);
        assert_eq!(wait_exit(&mut replica, Duration::from_secs(20)), 0);
    }
}
