//! `[[schedules]]`: nats-server publishes a schedule's message itself, so
//! with two replicas each firing is stored and handled once; the file is
//! the truth at start-up and at every reload.

use natsapp_wasm_tests::*;
use std::time::Duration;

const SCHEDULE: &str = r#"
[[schedules]]
name = "tick"
subject = "jobs.tick"
every = "1s"
payload = '{"op":"ok"}'
headers = { "X-Job" = "tick" }
stream = "JOBS"
"#;

fn service(schedules: &str) -> String {
    format!(
        r#"
[service]
name = "scheduled"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]

[[streams]]
name = "JOBS"
subjects = ["jobs.>", "natsapp.schedules.>"]
allow_schedules = true

[[subscribers]]
name = "tick"
component = "{{testkit}}"
subject = "jobs.tick"
stream = "JOBS"
durable = "tick"
{schedules}"#
    )
}

/// Firings stored on jobs.tick in JOBS so far.
async fn firings(js: &async_nats::jetstream::Context) -> usize {
    firings_in(js, "JOBS").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_tick_across_replicas_until_it_leaves_the_file() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let file = ServiceFile::new(&server, &service(SCHEDULE));
    // Started together: one of them puts the schedule.
    let (first, second) = tokio::join!(Running::start(&file), Running::start(&file));
    let stream = js.get_stream("JOBS").await.unwrap();
    let held = stream
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.tick")
        .await
        .unwrap();
    assert_eq!(held.sequence, 1, "put once, before any firing");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let fired = firings(&js).await;
    assert!((3..=6).contains(&fired), "{fired} firings in 5 s");
    // Each firing carries the schedule's payload and headers.
    let one = stream
        .get_last_raw_message_by_subject("jobs.tick")
        .await
        .unwrap();
    assert_eq!(one.payload.as_ref(), br#"{"op":"ok"}"#);
    assert_eq!(one.headers.get("X-Job").map(|v| v.as_str()), Some("tick"));
    assert_eq!(
        one.headers.get("Nats-Scheduler").map(|v| v.as_str()),
        Some("natsapp.schedules.scheduled.tick")
    );

    // Gone from the file, and the stream's flag with it: a reload of either
    // replica still finds and removes it.
    file.write(
        &server,
        "service.toml",
        &service("").replace("allow_schedules = true\n", ""),
    );
    first.reloader.reload().await.unwrap();
    second.reloader.reload().await.unwrap();
    let stopped_at = firings(&js).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        firings(&js).await <= stopped_at + 1,
        "still firing after the reload"
    );
    drained(&js, "JOBS", "tick").await;
    let total = firings(&js).await as u64;
    let (a, b) = (
        settled_stats(&first, "tick").await,
        settled_stats(&second, "tick").await,
    );
    assert_eq!(
        a.acked + b.acked,
        total,
        "each firing handled once: {a:?} {b:?}"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_schedule_is_not_put_again_at_start() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let file = ServiceFile::new(&server, &service(SCHEDULE));
    // `check` shows it, without a server.
    let plan = succeeds(
        std::process::Command::new(natsapp_bin()).args(["check", file.path().to_str().unwrap()]),
    );
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains(
            "schedules (published by nats-server):\n  tick: @every 1000ms -> jobs.tick (held on natsapp.schedules.scheduled.tick in stream JOBS)\n"
        ),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    // `docs` lists it in the AsyncAPI document.
    let docs = succeeds(
        std::process::Command::new(natsapp_bin()).args(["docs", file.path().to_str().unwrap()]),
    );
    let doc: serde_json::Value = serde_json::from_slice(&docs.stdout).unwrap();
    let operation = &doc["operations"]["schedule-tick"];
    assert_eq!(operation["action"], "send");
    let channel = operation["channel"]["$ref"]
        .as_str()
        .unwrap()
        .trim_start_matches("#/channels/");
    assert_eq!(doc["channels"][channel]["address"], "jobs.tick");
    Running::start(&file).await.stop().await;
    let stream = js.get_stream("JOBS").await.unwrap();
    let held = stream
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.tick")
        .await
        .unwrap();
    // A restart (or a second replica) finds the same schedule held.
    Running::start(&file).await.stop().await;
    let again = stream
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.tick")
        .await
        .unwrap();
    assert_eq!(again.sequence, held.sequence, "not put again");

    // Changed in the file, it is put anew.
    file.write(
        &server,
        "service.toml",
        &service(&SCHEDULE.replace("every = \"1s\"", "every = \"2s\"")),
    );
    Running::start(&file).await.stop().await;
    let changed = stream
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.tick")
        .await
        .unwrap();
    assert_eq!(
        changed.headers.get("Nats-Schedule").map(|v| v.as_str()),
        Some("@every 2000ms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_fires_once_and_is_not_put_again_once_past() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    // Far enough ahead that a start on a loaded machine is done before it
    // (an `at` already past when the service starts is not put at all).
    let at =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(8));
    let once = SCHEDULE
        .replace("name = \"tick\"", "name = \"once\"")
        .replace("subject = \"jobs.tick\"", "subject = \"jobs.once\"")
        .replace("every = \"1s\"", &format!("at = \"{at}\""));
    let file = ServiceFile::new(&server, &service(&once));
    Running::start(&file).await.stop().await;
    let stream = js.get_stream("JOBS").await.unwrap();
    let held = "natsapp.schedules.scheduled.once";
    let fired = eventually(Duration::from_secs(30), "the at to fire", || async {
        stream
            .get_last_raw_message_by_subject("jobs.once")
            .await
            .ok()
    })
    .await;
    assert_eq!(
        fired.headers.get("Nats-Scheduler").map(|v| v.as_str()),
        Some(held),
        "fired by the schedule the service put"
    );
    // Fired, nats-server removes it; a restart after its time puts it not
    // again, and it does not fire twice.
    eventually(
        Duration::from_secs(5),
        "the fired schedule removed",
        || async {
            stream
                .get_last_raw_message_by_subject(held)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    Running::start(&file).await.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(stream.get_last_raw_message_by_subject(held).await.is_err());
    let mut info = js.get_stream("JOBS").await.unwrap();
    let jobs = info.info().await.unwrap().state.messages;
    assert_eq!(jobs, 1, "one firing, and nothing held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_in_an_included_file_is_put_changed_and_removed_and_the_reload_says_so() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let text = service("").replace(
        "graceful_timeout = \"5s\"\n",
        "graceful_timeout = \"5s\"\ninclude = [\"jobs/*.toml\"]\n",
    );
    let file = ServiceFile::new(&server, &text);
    file.write(&server, "jobs/tick.toml", SCHEDULE);
    let running = Running::start(&file).await;
    let stream = js.get_stream("JOBS").await.unwrap();
    let held = "natsapp.schedules.scheduled.tick";
    let schedule_of = || async {
        stream
            .get_last_raw_message_by_subject(held)
            .await
            .ok()
            .map(|m| m.headers.get("Nats-Schedule").unwrap().to_string())
    };
    assert_eq!(schedule_of().await.as_deref(), Some("@every 1000ms"));

    let unchanged = running.reloader.reload().await.unwrap();
    assert_eq!(
        (
            unchanged.schedules_put.len(),
            unchanged.schedules_removed.len()
        ),
        (0, 0),
        "an unchanged schedule is not put again: {unchanged}"
    );

    file.write(
        &server,
        "jobs/tick.toml",
        &SCHEDULE.replace("every = \"1s\"", "every = \"1h\""),
    );
    let changed = running.reloader.reload().await.unwrap();
    assert_eq!(
        (changed.schedules_put, changed.schedules_removed),
        (vec!["tick in JOBS".to_string()], vec![])
    );
    assert_eq!(schedule_of().await.as_deref(), Some("@every 3600000ms"));

    std::fs::remove_file(file.path().parent().unwrap().join("jobs/tick.toml")).unwrap();
    let removed = running.reloader.reload().await.unwrap();
    assert_eq!(removed.schedules_removed, ["tick in JOBS"]);
    assert!(
        removed
            .to_string()
            .ends_with("; schedules put none, removed tick in JOBS"),
        "{removed}"
    );
    assert_eq!(schedule_of().await, None);
}

/// The service as `svc` with tenant acme, whose subscriber reads ACME_JOBS
/// in acme's account; `schedules` is appended.
fn tenant_service(schedules: &str) -> String {
    format!(
        r#"
[service]
name = "scheduled"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]
user = "svc"
password = "svc"

[[tenants]]
name = "acme"
nats = {{ user = "acme", password = "acme" }}

[[streams]]
name = "ACME_JOBS"
subjects = ["jobs.>", "natsapp.schedules.>"]
allow_schedules = true

[[subscribers]]
name = "tick"
tenant = "acme"
component = "{{testkit}}"
subject = "jobs.tick"
stream = "ACME_JOBS"
durable = "tick"
{schedules}"#
    )
}

/// Firings stored on jobs.tick in `stream` so far.
async fn firings_in(js: &async_nats::jetstream::Context, stream: &str) -> usize {
    stored_on(js, stream, "jobs.tick").await
}

/// Messages stored on `subject` in `stream` so far.
async fn stored_on(js: &async_nats::jetstream::Context, stream: &str, subject: &str) -> usize {
    use futures::TryStreamExt;
    let stream = js.get_stream(stream).await.unwrap();
    stream
        .info_with_subjects(subject)
        .await
        .unwrap()
        .try_collect::<Vec<(String, usize)>>()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_schedule_is_put_with_its_identity_and_fires_in_its_own_account() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let schedule = SCHEDULE.replace(
        "stream = \"JOBS\"",
        "stream = \"ACME_JOBS\"\ntenant = \"acme\"",
    );
    let file = ServiceFile::new(&server, &tenant_service(&schedule));
    let running = Running::start(&file).await;
    let (acme, svc) = (
        crate::jetstream_as(&server, "acme").await,
        crate::jetstream_as(&server, "svc").await,
    );
    let stream = acme.get_stream("ACME_JOBS").await.unwrap();
    stream
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.acme.tick")
        .await
        .expect("the schedule held in acme's account, on a subject naming acme");
    assert!(
        svc.get_stream("ACME_JOBS").await.is_err(),
        "nothing of it in the service's account"
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let fired = firings_in(&acme, "ACME_JOBS").await;
    assert!((3..=6).contains(&fired), "{fired} firings in 5 s");

    file.write(&server, "service.toml", &tenant_service(""));
    let summary = running.reloader.reload().await.unwrap();
    assert_eq!(
        summary.schedules_removed,
        ["tick in ACME_JOBS of tenant \"acme\""],
        "{summary}"
    );
    let stopped_at = firings_in(&acme, "ACME_JOBS").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        firings_in(&acme, "ACME_JOBS").await <= stopped_at + 1,
        "still firing after the reload"
    );
    drained(&acme, "ACME_JOBS", "tick").await;
    let handled = settled_stats(&running, "tick").await.acked;
    assert_eq!(
        handled,
        firings_in(&acme, "ACME_JOBS").await as u64,
        "each firing handled once, by acme's subscriber"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moving_to_another_account_takes_its_schedule_along() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let schedule = SCHEDULE.replace(
        "stream = \"JOBS\"",
        "stream = \"ACME_JOBS\"\ntenant = \"acme\"",
    );
    let in_acme = tenant_service(&schedule);
    let file = ServiceFile::new(&server, &in_acme);
    let running = Running::start(&file).await;
    let (acme, beta) = (
        crate::jetstream_as(&server, "acme").await,
        crate::jetstream_as(&server, "beta").await,
    );
    eventually(
        Duration::from_secs(10),
        "a firing in acme's account",
        || async { (firings_in(&acme, "ACME_JOBS").await > 0).then_some(()) },
    )
    .await;

    let in_beta = in_acme.replace(
        r#"nats = { user = "acme", password = "acme" }"#,
        r#"nats = { user = "beta", password = "beta" }"#,
    );
    assert_ne!(in_beta, in_acme);
    file.write(&server, "service.toml", &in_beta);
    let summary = running.reloader.reload().await.unwrap();
    let tick = "tick in ACME_JOBS of tenant \"acme\"";
    assert_eq!(
        (
            summary.schedules_removed.clone(),
            summary.schedules_put.clone()
        ),
        (vec![tick.to_string()], vec![tick.to_string()]),
        "removed from acme's account, put in beta's: {summary}"
    );
    acme.get_stream("ACME_JOBS")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("natsapp.schedules.scheduled.acme.tick")
        .await
        .expect_err("nothing held in the account the tenant left");
    let left_at = firings_in(&acme, "ACME_JOBS").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        firings_in(&acme, "ACME_JOBS").await <= left_at + 1,
        "still firing in the account the tenant left"
    );
    assert!(
        firings_in(&beta, "ACME_JOBS").await >= 2,
        "firing in the tenant's new account"
    );

    // Reopened in the same account (another user of it), nothing moves.
    let again = in_beta.replace(
        r#"nats = { user = "beta", password = "beta" }"#,
        r#"nats = { user = "beta2", password = "beta2" }"#,
    );
    file.write(&server, "service.toml", &again);
    let summary = running.reloader.reload().await.unwrap();
    assert!(
        summary.schedules_removed.is_empty() && summary.schedules_put.is_empty(),
        "a tenant reopened in its own account keeps its schedule as it is: {summary}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_and_a_tenants_schedules_in_one_account_leave_each_other_alone() {
    // A tenant without an identity of its own shares the service's account.
    let server = NatsServer::start();
    let js = server.jetstream().await;
    let text = format!(
        "{}\n[[tenants]]\nname = \"acme\"\n\n[[subscribers]]\nname = \"tock\"\ntenant = \"acme\"\n\
         component = \"{{testkit}}\"\nsubject = \"jobs.tock\"\nstream = \"JOBS\"\ndurable = \"tock\"\n\n\
         [[schedules]]\nname = \"tock\"\nsubject = \"jobs.tock\"\nevery = \"1s\"\npayload = '{{\"op\":\"ok\"}}'\n\
         stream = \"JOBS\"\ntenant = \"acme\"\n",
        service(SCHEDULE)
    );
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let stream = js.get_stream("JOBS").await.unwrap();
    let held = |subject: &'static str| {
        let stream = stream.clone();
        async move {
            stream
                .get_last_raw_message_by_subject(subject)
                .await
                .unwrap_or_else(|e| panic!("nothing held on {subject}: {e}"))
                .sequence
        }
    };
    let service_held = held("natsapp.schedules.scheduled.tick").await;
    let tenant_held = held("natsapp.schedules.scheduled.acme.tock").await;

    let summary = running.reloader.reload().await.unwrap();
    assert!(
        summary.schedules_put.is_empty() && summary.schedules_removed.is_empty(),
        "an unchanged file neither puts nor removes a schedule: {summary}"
    );
    assert_eq!(
        (
            held("natsapp.schedules.scheduled.tick").await,
            held("natsapp.schedules.scheduled.acme.tock").await
        ),
        (service_held, tenant_held),
        "each owner's sync left the other's schedule as it was"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stored_on(&js, "JOBS", "jobs.tick").await >= 2,
        "the service's schedule fires"
    );
    assert!(
        stored_on(&js, "JOBS", "jobs.tock").await >= 2,
        "and the tenant's"
    );
    running.stop().await;
}
