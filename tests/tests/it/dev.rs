//! `natsapp-wasm dev`, as a new user runs it: from `new` to a running
//! handler with one command, a local nats-server started for it, an edit
//! rebuilt and reloaded, a broken edit leaving the last good build running.

use natsapp_wasm_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until the log file holds `line` (a substring), or fails with the log.
fn wait_for_log(log: &Path, line: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(line) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "no {line:?} in the log within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_a_server_builds_runs_and_reloads_on_change() {
    let parent = tempfile::tempdir().unwrap();
    succeeds(
        Command::new(natsapp_bin())
            .args(["new", "dev-hello", "--lang", "python"])
            .current_dir(parent.path()),
    );
    let root = parent.path().join("dev-hello");
    // A free port: the project's server is one dev must start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = std::fs::read_to_string(root.join("service.toml"))
        .unwrap()
        .replace("nats://localhost:4222", &format!("nats://localhost:{port}"));
    std::fs::write(root.join("service.toml"), toml).unwrap();

    let log = parent.path().join("dev.log");
    let path = format!(
        "{}:{}",
        repo_root().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // One file, appended to by both streams.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut dev = Command::new(natsapp_bin())
        .arg("dev")
        .current_dir(&root)
        .env("PATH", path)
        .env("NATS_SERVER_BIN", nats_test_server::nats_server_bin())
        .env_remove("NATS_SERVERS")
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let minutes = Duration::from_secs(180);
    wait_for_log(
        &log,
        &format!(
            "dev: started {} on 127.0.0.1:{port}",
            nats_test_server::nats_server_bin().display()
        ),
        minutes,
    );
    wait_for_log(&log, "dev: watching", minutes);

    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = subscribe(&client, "dev-hello.out").await;
    let within = Duration::from_secs(30);
    js_publish(&js, "dev-hello.in", r#"{"n": 1}"#).await;
    assert_eq!(
        next_json(&mut answers, within).await["handled_by"],
        "dev-hello"
    );

    let app = root.join("app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    std::fs::write(
        &app,
        source.replace(
            r#""handled_by": "dev-hello""#,
            r#""handled_by": "dev-hello v2""#,
        ),
    )
    .unwrap();
    wait_for_log(&log, "dev: changed: app.py", minutes);
    wait_for_log(
        &log,
        "dev: reloaded: added none; replaced dev-hello; removed none; unchanged none",
        minutes,
    );
    js_publish(&js, "dev-hello.in", r#"{"n": 2}"#).await;
    assert_eq!(
        next_json(&mut answers, within).await["handled_by"],
        "dev-hello v2"
    );

    // A broken edit: the build fails, the last good handler keeps running.
    std::fs::write(&app, "def handle(data, msg)\n    pass\n").unwrap();
    wait_for_log(&log, "dev: still running the previous build", minutes);
    js_publish(&js, "dev-hello.in", r#"{"n": 3}"#).await;
    assert_eq!(
        next_json(&mut answers, within).await["handled_by"],
        "dev-hello v2"
    );

    sigterm(&dev);
    assert_eq!(wait_exit(&mut dev, Duration::from_secs(30)), 0);
    wait_for_log(
        &log,
        "dev: stopped the local nats-server",
        Duration::from_secs(5),
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the nats-server dev started is gone with it"
    );
}
