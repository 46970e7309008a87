//! Deploying over NATS: replicas started from a file that holds only
//! `[service]`, `[nats]` and a key-value include run what `deploy` puts
//! in the key, report it on status requests, refuse a broken revision
//! while the last good one keeps serving, and follow a rollback.

mod fleet;
mod tenants;

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
