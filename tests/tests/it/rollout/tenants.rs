//! Tenants deploying over NATS into their own accounts: their fragments'
//! streams, components and refusals stay theirs.

use super::*;

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
