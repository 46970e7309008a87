//! Deploying over NATS: replicas started from a file that holds only
//! `[service]`, `[nats]` and a key-value include run what `deploy` puts
//! in the key, report it on status requests, refuse a broken revision
//! while the last good one keeps serving, and follow a rollback.

use natsapp_wasm_tests::*;
use std::process::{Child, Command, Output};
use std::time::Duration;

const FLEET: &str = r#"
[service]
name = "fleet"
graceful_timeout = "5s"
include = [{ kv = "DEPLOY", keys = "orders.>" }]

[nats]
servers = ["{url}"]
"#;

/// A replica that is stopped when the test ends.
struct Replica(Child);

impl Replica {
    /// `natsapp-wasm run SERVICE` with `env`, logging to `log`.
    fn run(service: &std::path::Path, log: &std::path::Path, env: &[(&str, &str)]) -> Replica {
        let child = Command::new(natsapp_bin())
            .args(["run", service.to_str().unwrap()])
            .envs(env.iter().copied())
            .env_remove("NATS_SERVERS")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Replica(child)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        sigterm(&self.0);
        let _ = wait_exit(&mut self.0, Duration::from_secs(15));
    }
}

fn natsapp(server: &NatsServer, args: &[&str]) -> Output {
    Command::new(natsapp_bin())
        .args(args)
        .args(["--server", server.url()])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fragment declaring the subscriber "kit" on `in.kit` running `component`.
fn fragment(dir: &std::path::Path, name: &str, component: &str, extra: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[[subscribers]]\nname = \"kit\"\ncomponent = \"{component}\"\nsubject = \"in.kit\"\nstream = \"IN\"\ndurable = \"kit\"\n{extra}"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

async fn create_stream(js: &async_nats::jetstream::Context, name: &str, subject: &str) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await
    .unwrap();
}

fn digest_of(path: &str) -> String {
    natsapp_wasm::config::sha256_hex(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_what_is_deployed_refuse_a_broken_revision_and_roll_back() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "IN", "in.>").await;
    create_stream(&js, "OUT", "out.>").await;
    let file = ServiceFile::new(&server, FLEET);
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let log = dir.path().join(format!("replica-{i}.log"));
        replicas.push(Replica(spawn_run(&file, &log, &[])));
        logged(&log, "nothing deployed runs yet").await;
    }

    // v1: the testkit, pushed to the object store by `deploy`.
    let v1 = fragment(dir.path(), "v1.toml", guests::TESTKIT, "");
    let out = natsapp(
        &server,
        &[
            "deploy",
            &v1,
            "DEPLOY/orders.kit",
            "--create",
            "--wait",
            "--replicas",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("deployed DEPLOY/orders.kit revision 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every replica (3) applied DEPLOY/orders.kit revision 1"),
        "{stdout}"
    );
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    drained(&js, "IN", "kit").await;

    // v2: the echo handler; status shows its digest on every replica.
    let v2 = fragment(
        dir.path(),
        "v2.toml",
        guests::ECHO,
        "publish = [\"out.>\"]\nconfig = { output = \"out.echo\" }\n",
    );
    let out = natsapp(
        &server,
        &[
            "deploy",
            &v2,
            "DEPLOY/orders.kit",
            "--wait",
            "--replicas",
            "3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = natsapp(&server, &["status", "DEPLOY", "--replicas", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let echo = &digest_of(guests::ECHO)[..12];
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains(&format!("DEPLOY/orders.kit  revision 2  kit={echo}")))
            .count(),
        3,
        "{status}"
    );
    js_publish(&js, "in.kit", "after v2").await;
    stream_has(&js, "OUT", 1).await;

    // v3 names a stream the server does not have: every replica refuses
    // it, v2 keeps serving, and `deploy --wait` says so.
    let v3 = fragment(
        dir.path(),
        "v3.toml",
        guests::ECHO,
        "publish = [\"out.>\"]\nconfig = { output = \"out.echo\" }\n",
    );
    std::fs::write(
        &v3,
        std::fs::read_to_string(&v3)
            .unwrap()
            .replace("stream = \"IN\"", "stream = \"MISSING\""),
    )
    .unwrap();
    let out = natsapp(
        &server,
        &[
            "deploy",
            &v3,
            "DEPLOY/orders.kit",
            "--wait",
            "--replicas",
            "3",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("refused revision 3: ").count(),
        3,
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains("MISSING"),
        "the reason names the stream: {stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("3 of 3 replicas refused DEPLOY/orders.kit revision 3"),
        "{}",
        text(&out)
    );
    js_publish(&js, "in.kit", "v2 still serves").await;
    stream_has(&js, "OUT", 2).await;

    // Back to v1: every replica runs the testkit again.
    let out = natsapp(
        &server,
        &["rollback", "DEPLOY/orders.kit", "--revision", "1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("rolled DEPLOY/orders.kit back to revision 1: it is revision 4 now"),
        "{}",
        text(&out)
    );
    let testkit = &digest_of(guests::TESTKIT)[..12];
    eventually(
        Duration::from_secs(30),
        "every replica on revision 4",
        || async {
            let out = natsapp(&server, &["status", "DEPLOY", "--replicas", "3"]);
            let status = String::from_utf8_lossy(&out.stdout).into_owned();
            (status
                .lines()
                .filter(|l| l.contains(&format!("DEPLOY/orders.kit  revision 4  kit={testkit}")))
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    drained(&js, "IN", "kit").await;
    assert_eq!(
        stream_messages(&js, "OUT").await,
        2,
        "nothing more went through echo after the rollback"
    );
}

const PLATFORM: &str = r#"
[service]
name = "platform"
graceful_timeout = "5s"

[nats]
servers = ["{url}"]
user = "svc"
password = "svc"

[[tenants]]
name = "acme"
nats = { user = "acme", password = "acme" }
deploy = { kv = "ACME_DEPLOY", keys = ">" }
quotas = { component_size = "100KiB" }
grants = { publish = ["acme.>"] }

[[tenants]]
name = "beta"
nats = { user = "beta", password = "beta" }
deploy = { kv = "BETA_DEPLOY", keys = ">" }
grants = { publish = ["beta.>"] }
"#;

/// Tenant `name`'s echo subscriber: from `name.in` to `name.out.<output>`,
/// running `component`, written to `dir`.
fn echo_fragment(
    dir: &std::path::Path,
    name: &str,
    file: &str,
    component: &str,
    output: &str,
) -> String {
    let path = dir.join(file);
    let upper = name.to_uppercase();
    std::fs::write(
        &path,
        format!(
            "[[subscribers]]\nname = \"{name}-echo\"\ncomponent = \"{component}\"\nsubject = \"{name}.in\"\nstream = \"{upper}_IN\"\ndurable = \"echo\"\npublish = [\"{name}.out.>\"]\nconfig = {{ output = \"{name}.out.{output}\" }}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// `natsapp-wasm ARGS` as tenant `tenant` (its user), with its CI's flags.
fn as_tenant(server: &NatsServer, tenant: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(natsapp_bin());
    cmd.args(args).args([
        "--server",
        server.url(),
        "--user",
        tenant,
        "--password",
        tenant,
    ]);
    cmd
}

/// Acme's and beta's JetStream, each in its account with its streams
/// `<TENANT>_IN` (`<tenant>.in`) and `<TENANT>_OUT` (`<tenant>.out.>`).
async fn tenant_streams(
    server: &NatsServer,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::Context,
) {
    let (acme, beta) = (
        crate::jetstream_as(server, "acme").await,
        crate::jetstream_as(server, "beta").await,
    );
    for (js, name) in [(&acme, "acme"), (&beta, "beta")] {
        let upper = name.to_uppercase();
        create_stream(js, &format!("{upper}_IN"), &format!("{name}.in")).await;
        create_stream(js, &format!("{upper}_OUT"), &format!("{name}.out.>")).await;
    }
    (acme, beta)
}

/// `status ACME_DEPLOY` by acme's CI, for one replica.
fn acme_status(server: &NatsServer) -> Output {
    as_tenant(
        server,
        "acme",
        &["status", "ACME_DEPLOY", "--replicas", "1"],
    )
    .output()
    .unwrap()
}

/// Each tenant's CI deploys its echo, v1, with its own credentials.
fn deploy_echo_v1(server: &NatsServer, dir: &std::path::Path) {
    for tenant in ["acme", "beta"] {
        let v1 = echo_fragment(dir, tenant, &format!("{tenant}-1.toml"), guests::ECHO, "v1");
        let out = deploy_as(server, tenant, &v1).output().unwrap();
        assert!(out.status.success(), "{tenant}: {}", text(&out));
    }
}

/// `deploy FRAGMENT <TENANT>_DEPLOY/echo --wait` by `tenant`'s CI, its
/// components pushed to `<TENANT>_COMPONENTS`, for one replica.
fn deploy_as(server: &NatsServer, tenant: &str, fragment: &str) -> Command {
    let upper = tenant.to_uppercase();
    as_tenant(
        server,
        tenant,
        &[
            "deploy",
            fragment,
            &format!("{upper}_DEPLOY/echo"),
            "--components",
            &format!("{upper}_COMPONENTS"),
            "--create",
            "--wait",
            "--replicas",
            "1",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_deploy_into_their_own_accounts_and_a_refusal_stays_theirs() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let (acme, beta) = tenant_streams(&server).await;
    let file = ServiceFile::new(&server, PLATFORM);
    let running = Running::start(&file).await;
    let dir = tempfile::tempdir().unwrap();
    let deploy = |tenant: &str, fragment: &str| deploy_as(&server, tenant, fragment);

    // Each tenant's CI deploys with its own credentials, into its account.
    deploy_echo_v1(&server, dir.path());
    js_publish(&acme, "acme.in", "a").await;
    js_publish(&beta, "beta.in", "b").await;
    stream_has(&acme, "ACME_OUT", 1).await;
    stream_has(&beta, "BETA_OUT", 1).await;

    // Acme asks for more than its grants, declares a tenant: each refused,
    // naming acme, its key and the revision.
    let outside = echo_fragment(dir.path(), "acme", "outside.toml", guests::ECHO, "v2");
    std::fs::write(
        &outside,
        std::fs::read_to_string(&outside).unwrap().replace(
            "publish = [\"acme.out.>\"]",
            "publish = [\"acme.out.>\", \"beta.>\"]",
        ),
    )
    .unwrap();
    let tenants = dir.path().join("tenant.toml");
    std::fs::write(&tenants, "[[tenants]]\nname = \"evil\"\n").unwrap();
    for (fragment, words, revision) in [
        (
            outside.as_str(),
            "\"beta.>\" is outside tenant \"acme\"'s grants.publish",
            2,
        ),
        (
            tenants.to_str().unwrap(),
            "tenant \"acme\"'s fragment may not declare tenants",
            3,
        ),
    ] {
        let out = deploy("acme", fragment).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!(
                "refused revision {revision}: tenant \"acme\"'s ACME_DEPLOY/echo revision {revision}: "
            )) && stdout.contains(words),
            "{}",
            text(&out)
        );
    }

    // Acme's component over its size quota is refused while beta's deploy
    // at the same time applies, and beta's messages keep flowing.
    let oversized = echo_fragment(dir.path(), "acme", "big.toml", guests::TESTKIT, "v4");
    let b2 = echo_fragment(dir.path(), "beta", "beta-2.toml", guests::ECHO, "v2");
    let piped = |mut cmd: Command| {
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let acme_deploy = piped(deploy("acme", &oversized));
    let beta_deploy = piped(deploy("beta", &b2));
    for i in 0..20 {
        js_publish(&beta, "beta.in", format!("b{i}")).await;
    }
    let (acme_out, beta_out) = (
        acme_deploy.wait_with_output().unwrap(),
        beta_deploy.wait_with_output().unwrap(),
    );
    assert_eq!(acme_out.status.code(), Some(1), "{}", text(&acme_out));
    assert!(
        String::from_utf8_lossy(&acme_out.stdout).contains("component_size quota allows"),
        "{}",
        text(&acme_out)
    );
    assert!(beta_out.status.success(), "{}", text(&beta_out));
    stream_has(&beta, "BETA_OUT", 21).await;
    js_publish(&beta, "beta.in", "after").await;
    eventually(
        Duration::from_secs(20),
        "beta's output on its v2 subject",
        || async {
            let s = beta.get_stream("BETA_OUT").await.unwrap();
            s.get_last_raw_message_by_subject("beta.out.v2")
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;

    // Acme's last good revision keeps serving; its status, asked with its
    // own credentials in its account, shows the refusal.
    js_publish(&acme, "acme.in", "still").await;
    stream_has(&acme, "ACME_OUT", 2).await;
    let out = acme_status(&server);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("ACME_DEPLOY/echo  revision 1  acme-echo=")
            && status.contains("refused revision 4: "),
        "{}",
        text(&out)
    );
    let out = as_tenant(&server, "beta", &["status", "ACME_DEPLOY"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ACME_DEPLOY: no replica answered"),
        "beta's account does not see acme's status: {}",
        text(&out)
    );
    assert_eq!(
        running.subscriber("acme-echo").tenant.as_deref(),
        Some("acme")
    );
    let deploys = running.stats.snapshot().deploys;
    let acme_key = deploys
        .iter()
        .find(|d| d.tenant.as_deref() == Some("acme"))
        .expect("acme's key in the statistics");
    assert_eq!(
        (
            acme_key.bucket.as_str(),
            acme_key.key.as_str(),
            acme_key.revision,
            acme_key.refused,
            acme_key.refusals
        ),
        ("ACME_DEPLOY", "echo", Some(1), Some(4), 3),
        "acme's three refused revisions are counted as its own"
    );
    let beta_key = deploys
        .iter()
        .find(|d| d.tenant.as_deref() == Some("beta"))
        .expect("beta's key in the statistics");
    assert_eq!((beta_key.revision, beta_key.refusals), (Some(2), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_slow_compile_is_refused_and_holds_up_no_other_tenant() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let (acme, beta) = tenant_streams(&server).await;
    // Acme may take 5 s to compile a component; a Python one takes
    // about 20 s on one core. The replica caches no compiled component,
    // so every deploy compiles.
    let platform = PLATFORM.replace(
        "quotas = { component_size = \"100KiB\" }",
        "quotas = { compile_time = \"5s\" }",
    );
    let file = ServiceFile::new(&server, &platform);
    let log = file.path().with_file_name("replica.log");
    let _replica = Replica::run(&file.path(), &log, &[("NATSAPP_CACHE_DIR", "off")]);
    logged(&log, "nothing deployed runs yet").await;
    let dir = tempfile::tempdir().unwrap();
    let deploy = |tenant: &str, fragment: &str| {
        let mut cmd = deploy_as(&server, tenant, fragment);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    deploy_echo_v1(&server, dir.path());

    // Acme deploys a component that compiles for longer than its quota.
    let slow = echo_fragment(
        dir.path(),
        "acme",
        "slow.toml",
        guests::PY_ORDER_PROCESSOR,
        "v2",
    );
    let acme_deploy = deploy("acme", &slow).spawn().unwrap();
    logged(
        &log,
        "subscriber \"acme-echo\" of tenant \"acme\"'s ACME_DEPLOY/echo revision 2 ahead",
    )
    .await;

    // While the replica compiles it, beta's deploy applies: acme's key is
    // then still at revision 1, its revision 2 not refused yet. Beta's
    // messages flow.
    let b2 = echo_fragment(dir.path(), "beta", "beta-2.toml", guests::ECHO, "v2");
    let out = deploy("beta", &b2).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = acme_status(&server);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("ACME_DEPLOY/echo  revision 1  acme-echo=") && !status.contains("refused"),
        "beta's v2 applied while acme's component still compiled: {}",
        text(&out)
    );
    for i in 0..50 {
        js_publish(&beta, "beta.in", format!("b{i}")).await;
    }
    stream_has(&beta, "BETA_OUT", 50).await;

    // Acme's compile is given up at its quota: refused, naming acme; its
    // revision 1 keeps serving.
    let out = acme_deploy.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("refused revision 2: tenant \"acme\"'s ACME_DEPLOY/echo revision 2: ")
            && stdout.contains(
                "compiling it took longer than tenant \"acme\"'s compile_time quota (5s) allows; it was given up"
            ),
        "{}",
        text(&out)
    );
    let s = beta.get_stream("BETA_OUT").await.unwrap();
    assert!(
        s.get_last_raw_message_by_subject("beta.out.v2")
            .await
            .is_ok(),
        "beta's messages ran its v2"
    );
    js_publish(&acme, "acme.in", "still").await;
    stream_has(&acme, "ACME_OUT", 1).await;
    let s = acme.get_stream("ACME_OUT").await.unwrap();
    assert!(s
        .get_last_raw_message_by_subject("acme.out.v1")
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_declare_their_streams_each_in_its_own_account() {
    let server = NatsServer::with_config(crate::ACCOUNTS);
    let platform = PLATFORM.replace(
        "graceful_timeout = \"5s\"",
        "graceful_timeout = \"5s\"\ninclude = [{ kv = \"DEPLOY\", keys = \">\" }]",
    );
    let file = ServiceFile::new(&server, &platform);
    let _running = Running::start(&file).await;
    let dir = tempfile::tempdir().unwrap();
    // Both declare streams IN and OUT: the same names, each in its account.
    let with_streams = |fragment: &str, name: &str| {
        let text = std::fs::read_to_string(fragment)
            .unwrap()
            .replace(&format!("{}_IN", name.to_uppercase()), "IN");
        text + &format!(
            "\n[[streams]]\nname = \"IN\"\nsubjects = [\"{name}.in\"]\n\n[[streams]]\nname = \"OUT\"\nsubjects = [\"{name}.out.>\"]\n"
        )
    };
    // Beta deploys first: the platform's stream of the same name is still
    // declared in the platform's account after.
    let beta_fragment = echo_fragment(dir.path(), "beta", "beta.toml", guests::ECHO, "v1");
    let text_b = with_streams(&beta_fragment, "beta");
    std::fs::write(&beta_fragment, text_b).unwrap();
    let out = deploy_as(&server, "beta", &beta_fragment).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // The platform's fragment declares its streams and a publisher.
    let own = echo_fragment(dir.path(), "own", "own.toml", guests::ECHO, "v1");
    let mut own_text = with_streams(&own, "own");
    own_text += "\n[[publishers]]\nsubject = \"own.out.>\"\nstream = \"OUT\"\ntimeout = \"5s\"\n";
    std::fs::write(&own, own_text).unwrap();
    let out = as_tenant(
        &server,
        "svc",
        &[
            "deploy",
            &own,
            "DEPLOY/own",
            "--components",
            "COMPONENTS",
            "--create",
            "--wait",
            "--replicas",
            "1",
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let (svc, beta) = (
        crate::jetstream_as(&server, "svc").await,
        crate::jetstream_as(&server, "beta").await,
    );
    js_publish(&svc, "own.in", "o").await;
    js_publish(&beta, "beta.in", "b").await;
    stream_has(&svc, "OUT", 1).await;
    stream_has(&beta, "OUT", 1).await;
    for (js, account) in [(&svc, "own"), (&beta, "beta")] {
        let subjects = |name: &'static str| async move {
            let mut s = js.get_stream(name).await.unwrap();
            s.info().await.unwrap().config.subjects.clone()
        };
        assert_eq!(subjects("IN").await, [format!("{account}.in")]);
        assert_eq!(subjects("OUT").await, [format!("{account}.out.>")]);
        let out = stored_payloads(js, "OUT").await;
        assert_eq!(out[0].0, format!("{account}.out.v1"));
    }
}

/// Every payload stored in `stream`, in order, with its subject.
async fn stored_payloads(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, String)> {
    let s = js.get_stream(stream).await.unwrap();
    let n = stream_messages(js, stream).await;
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = s.get_raw_message(seq).await.unwrap();
        out.push((
            m.subject.to_string(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_converges_through_a_node_kill_and_restarts_from_nats() {
    let mut cluster = nats_test_server::NatsCluster::start().await.unwrap();
    let js = async_nats::jetstream::new(cluster.client().await.unwrap());
    for (name, subject) in [("IN", "in.>"), ("OUT", "out.>")] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let urls = cluster.urls();
    let servers: Vec<String> = urls.split(',').map(|u| format!("\"{u}\"")).collect();
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("service.toml");
    // The replicas' file holds [service], [nats] and the include only.
    std::fs::write(
        &service,
        FLEET.replace("[\"{url}\"]", &format!("[{}]", servers.join(", "))),
    )
    .unwrap();
    let spawn = |i: usize| {
        let log = dir.path().join(format!("replica-{i}.log"));
        let tag = format!("r{i}");
        (Replica::run(&service, &log, &[("REPLICA", &tag)]), log)
    };
    let mut replicas = Vec::new();
    for i in 0..3 {
        let (replica, log) = spawn(i);
        logged(&log, "nothing deployed runs yet").await;
        replicas.push(replica);
    }
    let cli = |args: &[&str]| {
        Command::new(natsapp_bin())
            .args(args)
            .args(["--server", &urls])
            .output()
            .unwrap()
    };
    // Each output's subject names its version and replica, so a delivery
    // whose ack died with the node and that another replica or version
    // handles again publishes a different subject: its outputs are told
    // apart from the first by the input's sequence, not their content.
    // The fragment names the streams (made R3 above) so that the runtime
    // publishes to OUT with a PubAck, and waits 2 s for one: a PubAck lost
    // with the node killed is then asked for again within seconds, not
    // after the default 30.
    let streams = "[[streams]]\nname = \"IN\"\nsubjects = [\"in.>\"]\ndeclare = false\n\n[[streams]]\nname = \"OUT\"\nsubjects = [\"out.>\"]\ndeclare = false\n\n[[publishers]]\nsubject = \"out.>\"\nstream = \"OUT\"\ntimeout = \"2s\"\n";
    let echo = |file: &str, version: &str| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                "[[subscribers]]\nname = \"orders\"\ncomponent = \"{}\"\nsubject = \"in.orders\"\nstream = \"IN\"\ndurable = \"orders\"\nconcurrency = 8\npublish = [\"out.>\"]\noutputs = {{ ids = \"sequence\" }}\nconfig = {{ output = \"out.{version}.${{REPLICA:-cli}}\" }}\n\n{streams}",
                guests::ECHO
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let (v1, v2) = (echo("v1.toml", "v1"), echo("v2.toml", "v2"));
    let out = cli(&[
        "deploy",
        &v1,
        "DEPLOY/orders.echo",
        "--create",
        "--bucket-replicas",
        "3",
        "--wait",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Orders flow while a node dies and v2 is deployed, and on after it.
    let flowing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let (js, flowing) = (js.clone(), flowing.clone());
        tokio::spawn(async move {
            // Each order is sent until stored: a node dies meanwhile. Its
            // id makes a second send of a stored order a duplicate the
            // stream drops.
            let mut sent = 0;
            while flowing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("o{sent}").as_str());
                loop {
                    let publish = js
                        .publish_with_headers(
                            "in.orders",
                            headers.clone(),
                            format!("o{sent}").into(),
                        )
                        .await;
                    let stored = match publish {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if stored {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(2).unwrap();
    let out = cli(&[
        "deploy",
        &v2,
        "DEPLOY/orders.echo",
        "--wait",
        "--replicas",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("every replica (3) applied DEPLOY/orders.echo revision 2"),
        "{}",
        text(&out)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    flowing.store(false, std::sync::atomic::Ordering::Relaxed);
    let orders = load.await.unwrap();
    cluster.restart(2).await.unwrap();
    drained(&js, "IN", "orders").await;
    let complete = tokio::time::timeout(
        Duration::from_secs(30),
        stream_has(&js, "OUT", orders as u64),
    )
    .await;
    let outputs = stored_payloads(&js, "OUT").await;
    let inputs = stored_payloads(&js, "IN").await;
    let stored: std::collections::BTreeSet<&String> = outputs.iter().map(|(_, p)| p).collect();
    let missing: Vec<&String> = inputs
        .iter()
        .map(|(_, p)| p)
        .filter(|p| !stored.contains(p))
        .collect();
    let mut counted: std::collections::BTreeMap<&String, Vec<&String>> = Default::default();
    for (subject, payload) in &outputs {
        counted.entry(payload).or_default().push(subject);
    }
    let repeated: Vec<_> = counted.iter().filter(|(_, s)| s.len() > 1).collect();
    if complete.is_err() || !missing.is_empty() || !repeated.is_empty() || inputs.len() != orders {
        // The runtimes' logs outlive the failed test, for its diagnosis.
        let logs = dir.keep();
        panic!(
            "{orders} orders sent, {} stored in IN, {} outputs; missing: {missing:?}; stored more than once (with their subjects): {repeated:?}; logs kept in {}",
            inputs.len(),
            outputs.len(),
            logs.display()
        );
    }
    assert_eq!(outputs.len(), orders, "every order output once");
    assert!(
        outputs.iter().any(|(s, _)| s.starts_with("out.v2.")),
        "v2 handled the orders after its deploy"
    );
    // Each replica's outputs name it (out.<version>.<replica>): none of
    // its v1 outputs is stored after its first v2 output.
    let mut compared = 0;
    for r in 0..3 {
        let place = |version: &str| {
            let subject = format!("out.{version}.r{r}");
            outputs
                .iter()
                .enumerate()
                .filter(move |(_, (s, _))| *s == subject)
                .map(|(i, _)| i)
        };
        if let (Some(last_v1), Some(first_v2)) = (place("v1").max(), place("v2").min()) {
            assert!(
                last_v1 < first_v2,
                "replica r{r} stored a v1 output (#{last_v1}) after its first v2 output (#{first_v2})"
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "some replica handled orders with v1 and v2");

    // A replica restarted after the deploy starts from NATS alone.
    drop(replicas.remove(0));
    let (replica, log) = spawn(3);
    logged(&log, " running ").await;
    replicas.push(replica);
    let out = cli(&["status", "DEPLOY", "--replicas", "3"]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        status
            .matches("DEPLOY/orders.echo  revision 2  orders=")
            .count(),
        3,
        "{}",
        text(&out)
    );

    // Back to v1 everywhere.
    let out = cli(&["rollback", "DEPLOY/orders.echo"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(
        Duration::from_secs(30),
        "every replica on revision 3",
        || async {
            let out = cli(&["status", "DEPLOY", "--replicas", "3"]);
            (String::from_utf8_lossy(&out.stdout)
                .matches("DEPLOY/orders.echo  revision 3  orders=")
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    js.publish("in.orders", "after rollback".into())
        .await
        .unwrap()
        .await
        .unwrap();
    stream_has(&js, "OUT", orders as u64 + 1).await;
    let last = stored_payloads(&js, "OUT").await.pop().unwrap();
    assert!(
        last.0.starts_with("out.v1.") && last.1 == "after rollback",
        "{last:?}"
    );
}
