//! Components in a JetStream Object Store: `push` stores each version by
//! its SHA-256 and never overwrites one, subscribers read them through
//! their own connection, and bytes that are not the ones named are refused
//! with both digests.

use natsapp_wasm::error::ErrorChain;
use natsapp_wasm_tests::*;

fn digest_of(path: &str) -> String {
    natsapp_wasm::config::sha256_hex(&std::fs::read(path).unwrap())
}

/// `natsapp-wasm push FILE TARGET --server URL EXTRA…`, which must succeed;
/// its standard output.
fn push(server: &NatsServer, file: &str, target: &str, extra: &[&str]) -> String {
    let out = succeeds(
        std::process::Command::new(natsapp_bin())
            .args(["push", file, target, "--server", server.url()])
            .args(extra),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The kit service with its subscriber's component from `component`, and a
/// second subscriber, "pinned", running `pinned`.
fn object_service(component: &str, pinned: &str) -> String {
    let mut toml = crate::kit_service("").replace(
        "component = \"{testkit}\"",
        &format!("component = {component}"),
    );
    toml += &format!(
        r#"
[[subscribers]]
name = "pinned"
component = {pinned}
subject = "in.pinned"
stream = "IN"
durable = "pinned"
"#
    );
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stores_each_version_by_digest_and_subscribers_run_them() {
    let server = NatsServer::start();
    let testkit = digest_of(guests::TESTKIT);
    let out = push(&server, guests::TESTKIT, "COMPONENTS/kit", &["--create"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                "stored COMPONENTS/kit/{testkit} ({} bytes); COMPONENTS/kit links to it",
                std::fs::metadata(guests::TESTKIT).unwrap().len()
            ),
            format!("component = {{ object = \"COMPONENTS/kit\", sha256 = \"{testkit}\" }}"),
        ]
    );
    let again = push(&server, guests::TESTKIT, "COMPONENTS/kit", &[]);
    assert!(
        again.starts_with("already stored COMPONENTS/kit/"),
        "{again}"
    );

    let file = ServiceFile::new(
        &server,
        &object_service(
            "{ object = \"COMPONENTS/kit\" }",
            &format!("{{ object = \"COMPONENTS/kit\", sha256 = \"{testkit}\" }}"),
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    js_publish(&js, "in.pinned", r#"{"op":"ok"}"#).await;
    drained(&js, "IN", "kit").await;
    drained(&js, "IN", "pinned").await;
    assert_eq!(settled_stats(&running, "kit").await.acked, 1);
    assert_eq!(settled_stats(&running, "pinned").await.acked, 1);

    // A new version moves the link: a reload replaces the subscriber that
    // follows it; the pinned one keeps its version, still stored.
    let echo = digest_of(guests::ECHO);
    let out = push(&server, guests::ECHO, "COMPONENTS/kit", &[]);
    assert!(
        out.starts_with(&format!("stored COMPONENTS/kit/{echo} ")),
        "{out}"
    );
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(
        (summary.replaced, summary.unchanged),
        (vec!["kit".to_string()], vec!["pinned".to_string()])
    );
    let store = js.get_object_store("COMPONENTS").await.unwrap();
    for version in [&testkit, &echo] {
        let info = store.info(format!("kit/{version}")).await.unwrap();
        assert!(!info.deleted, "version {version} is kept");
    }
    js_publish(&js, "in.pinned", r#"{"op":"ok"}"#).await;
    drained(&js, "IN", "pinned").await;
    assert_eq!(settled_stats(&running, "pinned").await.acked, 2);
}

/// The error `Service::start` gives for `file`.
async fn start_error(file: &ServiceFile) -> String {
    match natsapp_wasm::Service::start(file.config()).await {
        Ok(_) => panic!("the service started"),
        Err(e) => ErrorChain(&e).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_the_ones_named_are_refused_with_both_digests() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let store = js
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "COMPONENTS".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Echo's bytes stored as if they were the testkit's version.
    let (testkit, echo) = (digest_of(guests::TESTKIT), digest_of(guests::ECHO));
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let forged = store
        .put(format!("kit/{testkit}").as_str(), &mut &bytes[..])
        .await
        .unwrap();
    store.add_link("kit", &forged).await.unwrap();

    let file = ServiceFile::new(
        &server,
        &object_service("{ object = \"COMPONENTS/kit\" }", "\"{testkit}\""),
    );
    let error = start_error(&file).await;
    assert!(
        error.contains(&format!(
            "\"kit/{testkit}\" in object store \"COMPONENTS\" has SHA-256 {echo}, but its name says {testkit}"
        )),
        "{error}"
    );
    assert!(error.contains("(subscriber \"kit\")"), "{error}");

    let missing = "0".repeat(64);
    let file = ServiceFile::new(
        &server,
        &object_service(
            &format!("{{ object = \"COMPONENTS/kit\", sha256 = \"{missing}\" }}"),
            "\"{testkit}\"",
        ),
    );
    let error = start_error(&file).await;
    assert!(
        error.contains(&format!(
            "object store \"COMPONENTS\" has no version {missing} of \"kit\""
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_subscriber_reads_its_component_in_its_own_account() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let acme = ["--user", "acme", "--password", "acme"];
    push(
        &server,
        guests::TESTKIT,
        "ACME_COMPONENTS/kit",
        &[&acme[..], &["--create"]].concat(),
    );
    let file = ServiceFile::new(
        &server,
        r#"
[service]
name = "platform"
graceful_timeout = "5s"

[nats]
servers = ["{url}"]
user = "svc"
password = "svc"

[[streams]]
name = "ACME_IN"
subjects = ["acme.in"]

[[tenants]]
name = "acme"
nats = { user = "acme", password = "acme" }

[[subscribers]]
name = "acme-kit"
tenant = "acme"
component = { object = "ACME_COMPONENTS/kit" }
subject = "acme.in"
stream = "ACME_IN"
durable = "kit"
"#,
    );
    let running = Running::start(&file).await;
    let js = crate::jetstream_as(&server, "acme").await;
    js_publish(&js, "acme.in", r#"{"op":"ok"}"#).await;
    drained(&js, "ACME_IN", "kit").await;
    assert_eq!(settled_stats(&running, "acme-kit").await.acked, 1);

    // The service's own account has no such bucket: the tenant's
    // connection read it.
    let own = crate::jetstream_as(&server, "svc").await;
    assert!(own.get_object_store("ACME_COMPONENTS").await.is_err());
}
