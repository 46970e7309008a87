//! Tenants on a server with one account each: their own connections,
//! their files, their quotas, and a tenant that cannot connect not
//! stopping the others.

use natsapp_wasm_tests::*;
use std::time::Duration;

const SERVICE: &str = r#"
[service]
name = "platform"
graceful_timeout = "5s"
include = ["tenants/*.toml"]

[nats]
servers = ["{url}"]
user = "svc"
password = "svc"

[[streams]]
name = "ACME_IN"
subjects = ["acme.in"]

[[streams]]
name = "BETA_IN"
subjects = ["beta.in"]
"#;

fn tenant(name: &str, password: &str, extra: &str) -> String {
    let upper = name.to_uppercase();
    format!(
        r#"
[[tenants]]
name = "{name}"
nats = {{ user = "{name}", password = "{password}" }}
quotas = {{ publishes_per_message = 3 }}

[[subscribers]]
name = "{name}-kit"
tenant = "{name}"
component = "{{testkit}}"
subject = "{name}.in"
stream = "{upper}_IN"
durable = "kit"
{extra}
"#
    )
}

async fn connect(server: &NatsServer, user: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(server.url())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_run_side_by_side_each_in_its_own_account() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let file = ServiceFile::new(&server, SERVICE);
    // Acme's allow-list reaches beta's subjects; its account does not.
    file.write(
        &server,
        "tenants/acme.toml",
        &tenant("acme", "acme", "publish = [\"testkit.out.>\", \"beta.>\"]"),
    );
    file.write(
        &server,
        "tenants/beta.toml",
        &tenant("beta", "beta", "publish = [\"testkit.out.>\"]"),
    );
    file.write(&server, "tenants/gamma.toml", &tenant("gamma", "wrong", ""));
    let running = Running::start(&file).await;

    let gamma = running.subscriber("gamma-kit");
    assert_eq!(gamma.tenant.as_deref(), Some("gamma"));
    let reason = gamma.not_running.expect("gamma's subscriber does not run");
    assert!(
        reason.starts_with("tenant \"gamma\": cannot connect to NATS"),
        "{reason}"
    );

    let acme = connect(&server, "acme").await;
    let beta = connect(&server, "beta").await;
    let acme_js = async_nats::jetstream::new(acme.clone());
    let beta_js = async_nats::jetstream::new(beta.clone());
    let mut acme_denied = subscribe(&acme, "testkit.out.denied").await;
    let mut beta_spy = subscribe(&beta, "beta.note").await;
    js_publish(
        &acme_js,
        "acme.in",
        r#"{"op":"try_publish","subject":"beta.note"}"#,
    )
    .await;
    let report = next_json(&mut acme_denied, Duration::from_secs(10)).await;
    assert_eq!(
        report["result"], "Ok(())",
        "published in acme's own account"
    );
    assert!(
        silent(&mut beta_spy, Duration::from_millis(500)).await,
        "nothing crossed into beta's account"
    );

    js_publish(&beta_js, "beta.in", r#"{"op":"ok"}"#).await;
    drained(&acme_js, "ACME_IN", "kit").await;
    drained(&beta_js, "BETA_IN", "kit").await;
    let acme_stats = settled_stats(&running, "acme-kit").await;
    let beta_stats = settled_stats(&running, "beta-kit").await;
    assert_eq!(acme_stats.tenant.as_deref(), Some("acme"));
    assert_eq!((acme_stats.acked, beta_stats.acked), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_publishes_per_message_quota_is_enforced_and_counted() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let file = ServiceFile::new(&server, SERVICE);
    file.write(
        &server,
        "tenants/acme.toml",
        &tenant("acme", "acme", "publish = [\"testkit.out.>\"]"),
    );
    let running = Running::start(&file).await;
    let acme = connect(&server, "acme").await;
    let js = async_nats::jetstream::new(acme.clone());
    let flood: Vec<(String, String)> = (0..5)
        .map(|i| ("testkit.out.flood".to_string(), i.to_string()))
        .collect();
    js_publish(
        &js,
        "acme.in",
        serde_json::json!({"op": "outputs", "first": flood, "then": []}).to_string(),
    )
    .await;
    drained(&js, "ACME_IN", "kit").await;
    let s = settled_stats(&running, "acme-kit").await;
    assert_eq!(
        (s.quota_refused, s.termed, s.naked),
        (1, 1, 0),
        "the fourth publish is denied, which rejects the message: {s:?}"
    );
}

/// A kit `service` (no server accounts) whose subscriber is tenant acme's,
/// with these `quotas`.
pub(crate) fn in_tenant_acme(service: String, quotas: &str) -> String {
    service
        .replace(
            "[[subscribers]]",
            &format!("[[tenants]]\nname = \"acme\"\nquotas = {{ {quotas} }}\n\n[[subscribers]]"),
        )
        .replace("durable = \"kit\"", "durable = \"kit\"\ntenant = \"acme\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_memory_quota_holds_across_its_instances() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &in_tenant_acme(
            crate::with_dlq(
                "consumer = { max_deliver = 1 }\ndead_letter = \"dlq.kit\"\nlimits = { memory = \"128MiB\" }",
            ),
            "memory = \"40MiB\"",
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    // 20 MiB in a growing vector takes the memory from 33 to 65 MiB in one
    // step: within the subscriber's 128 MiB per instance, past the
    // tenant's 40 MiB.
    js_publish(&js, "in.kit", r#"{"op":"alloc","mib":20}"#).await;
    let dl = crate::dead_letter(&js, 1).await;
    let reason = crate::header(&dl, "Natsapp-Reason");
    assert!(
        reason.contains("the tenant's memory quota of 41943040 bytes is held by its instances"),
        "{reason}"
    );
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        s.failed(natsapp_wasm::message::FailureCause::Memory),
        1,
        "{s:?}"
    );
    assert_eq!(s.tenant.as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siblings_idle_instances_give_way_to_a_running_ones_memory() {
    let server = NatsServer::start();
    let sibling = "\n[[subscribers]]\nname = \"kit2\"\ntenant = \"acme\"\ncomponent = \"{testkit}\"\n\
                   subject = \"in.kit2\"\nstream = \"IN\"\ndurable = \"kit2\"\npublish = [\"testkit.out.>\"]\n";
    let file = ServiceFile::new(
        &server,
        &(in_tenant_acme(crate::kit_service(""), "memory = \"24MiB\"") + sibling),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut allocated = subscribe(&client, "testkit.out.alloc").await;
    // 8 MiB in a growing vector leaves the instance holding about 17 MiB,
    // which it keeps while idle, warm for its subscriber's next message.
    js_publish(&js, "in.kit", r#"{"op":"alloc","mib":8}"#).await;
    assert_eq!(
        next_json(&mut allocated, Duration::from_secs(10)).await["allocated_mib"],
        8
    );
    let idle = eventually(
        Duration::from_secs(5),
        "kit's instance idle and warm",
        || async {
            let t = running.stats.tenant("acme").unwrap();
            (running.subscriber("kit").in_flight == 0 && t.memory_held > 12 << 20).then_some(t)
        },
    )
    .await;
    // The sibling needs as much: both do not fit in 24 MiB.
    js_publish(&js, "in.kit2", r#"{"op":"alloc","mib":8}"#).await;
    assert_eq!(
        next_json(&mut allocated, Duration::from_secs(10)).await["allocated_mib"],
        8,
        "kit's idle instance gave way (it held {} bytes)",
        idle.memory_held
    );
    let t = running.stats.tenant("acme").unwrap();
    assert_eq!(t.idle_instances_reclaimed, 1, "{t:?}");
    let s = settled_stats(&running, "kit2").await;
    assert_eq!(
        (
            s.acked,
            s.failed(natsapp_wasm::message::FailureCause::Memory)
        ),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cpu_quota_bounds_its_spinning_guests_and_counts_the_parking() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &in_tenant_acme(
            crate::kit_service(
                "concurrency = 4\nconsumer = { max_deliver = 1 }\nlimits = { timeout = \"1s\" }",
            ),
            "cpu = \"0.2\"",
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        js_publish(&js, "in.kit", r#"{"op":"spin"}"#).await;
    }
    let s = stats_until(&running, "kit", "the spinners timed out", |s| s.termed == 4).await;
    let window = started.elapsed().as_secs_f64();
    assert_eq!(
        s.failed(natsapp_wasm::message::FailureCause::Timeout),
        4,
        "{s:?}"
    );
    let t = running.stats.tenant("acme").expect("acme's statistics");
    assert_eq!(t.cpu_quota, Some(0.2));
    // Four guests spinning for a second would use two cores unbounded; the
    // quota holds them to a fifth of one, plus its 10 ms burst and the last
    // tick each guest was admitted for. A tick is metered per poll of the
    // guest, wall-clock, so on a loaded machine one that the OS preempts
    // is charged longer than 10 ms: up to 100 ms each is allowed, still far
    // below the seconds an unbounded spinner takes.
    let allowed = 0.2 * (window + 0.05) + 4.0 * 0.1;
    assert!(
        t.guest_cpu_seconds > 0.0 && t.guest_cpu_seconds <= allowed,
        "{:.3} s of guest CPU in {window:.2} s (at most {allowed:.3}): {t:?}",
        t.guest_cpu_seconds
    );
    assert!(t.cpu_parked > 0, "over quota, guests were parked: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cpu_quota_is_not_left_idle_while_its_guests_wait() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &in_tenant_acme(
            crate::kit_service(
                "concurrency = 16\nconsumer = { max_deliver = 1 }\nlimits = { timeout = \"2s\" }",
            ),
            "cpu = \"0.1\", concurrency = 16",
        ),
    );
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    for _ in 0..16 {
        js_publish(&js, "in.kit", r#"{"op":"spin"}"#).await;
    }
    let s = stats_until(&running, "kit", "the spinners timed out", |s| {
        s.termed == 16
    })
    .await;
    assert_eq!(
        s.failed(natsapp_wasm::message::FailureCause::Timeout),
        16,
        "{s:?}"
    );
    // Sixteen guests spun for their two-second limit, all the while
    // waiting in line for a tenth of a core: the quota's 0.2 s were theirs
    // to use, and a line of parked guests must not leave it idle (40%
    // allowed for timers late on a loaded machine).
    let t = running.stats.tenant("acme").expect("acme's statistics");
    let earned = 0.1 * 2.0;
    assert!(
        t.guest_cpu_seconds >= 0.6 * earned,
        "{:.3} s of guest CPU: the spinners did not get the {earned} s their quota allows: {t:?}",
        t.guest_cpu_seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_connection_is_refused_later_stops_alone() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let text = SERVICE.replace(
        "password = \"svc\"\n",
        "password = \"svc\"\nreconnect_time_wait = \"100ms\"\nmax_reconnect_attempts = 3\n",
    );
    let file = ServiceFile::new(&server, &text);
    file.write(&server, "tenants/acme.toml", &tenant("acme", "acme", ""));
    file.write(&server, "tenants/beta.toml", &tenant("beta", "beta", ""));
    let running = Running::start(&file).await;

    // The operator removes acme's user: the server drops its connection
    // and refuses it from then on.
    server
        .reload(&crate::ACCOUNTS.replace("users: [ { user: acme, password: acme } ]", "users: []"));
    let acme = stats_until(&running, "acme-kit", "acme's subscriber stopped", |s| {
        s.not_running.is_some()
    })
    .await;
    assert!(
        acme.not_running
            .as_deref()
            .unwrap()
            .starts_with("tenant \"acme\": "),
        "{acme:?}"
    );

    let beta = connect(&server, "beta").await;
    let beta_js = async_nats::jetstream::new(beta);
    js_publish(&beta_js, "beta.in", r#"{"op":"ok"}"#).await;
    stats_until(&running, "beta-kit", "beta still handling", |s| {
        s.acked == 1
    })
    .await;
    assert!(running.subscriber("beta-kit").not_running.is_none());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_is_refused_past_the_tenants_rate() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::kit_service("tenant = \"acme\"").replace(
            "[[subscribers]]",
            "[[tenants]]\nname = \"acme\"\nquotas = { publish_rate = \"100/s\" }\n\n[[subscribers]]",
        ),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut out = subscribe(&client, "testkit.out.>").await;
    js_publish(&js, "in.kit", r#"{"op":"publish_flood","n":1000}"#).await;
    // The marker's handler waits 100 ms first: the flood spent the rate,
    // and 100 ms refill ten publishes' worth.
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"publish_retrying","subject":"testkit.out.marker","data":"end","attempts":1,"delay_ms":100}"#,
    )
    .await;
    let received = count_until_marker(&mut out, "testkit.out.flood").await;
    let s = stats_until(&running, "kit", "the flood handled", |s| s.acked == 2).await;
    // A full second's worth (100), plus what refilled at 100/s while the
    // flood ran (at most the handler's longest run).
    let refilled = (100.0 * s.latency.max_us as f64 / 1e6).ceil() as usize;
    assert!(
        (100..=101 + refilled).contains(&received),
        "{received} published ({refilled} could refill in {} us)",
        s.latency.max_us
    );
    assert!(s.quota_refused >= 1, "{s:?}");
}
