//! `natsapp-wasm new` for each language, as a new user would use it:
//! create, build with the project's own command, check, run one message.

use natsapp_wasm_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(dir: &Path, program: &str, args: &[&str]) {
    // The tools install-prereqs.sh puts in .venv (componentize-py,
    // wasm-tools) and .tools (wit-bindgen).
    let path = format!(
        "{}:{}:{}",
        repo_root().join(".venv/bin").display(),
        repo_root().join(".tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    succeeds(
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("PATH", path),
    );
}

async fn scaffold_builds_and_handles_a_message(lang: &str, build: &[&str]) {
    let name = format!("hello-{lang}");
    let parent = tempfile::tempdir().unwrap();
    let out = succeeds(
        Command::new(natsapp_bin())
            .args(["new", &name, "--lang", lang])
            .current_dir(parent.path()),
    );
    let root = parent.path().join(&name);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(format!("created ./{name} ({lang})").as_str())
    );
    if lang == "js" {
        // Same lockfile as guest-sdk/js, installed by install-prereqs.sh: reuse it
        // instead of a second `npm ci` (build.sh runs one when node_modules is absent).
        std::os::unix::fs::symlink(
            repo_root().join("guest-sdk/js/node_modules"),
            root.join("node_modules"),
        )
        .unwrap();
    }
    run(&root, build[0], &build[1..]);
    succeeds(
        Command::new(natsapp_bin())
            .args(["check", "service.toml"])
            .current_dir(&root),
    );
    // The test file the project comes with passes as written, with the
    // language's usual runner, driving `natsapp-wasm invoke`.
    let test = match lang {
        "python" => Some((
            repo_root().join(".venv/bin/python"),
            vec!["-m", "pytest", "-q"],
            "2 passed",
        )),
        "js" => Some(("node".into(), vec!["--test"], "# pass 2")),
        _ => None,
    };
    if let Some((runner, args, passed)) = test {
        let out = succeeds(
            Command::new(runner)
                .args(args)
                .current_dir(&root)
                .env("NATSAPP_WASM", natsapp_bin()),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(passed), "{lang}: {stdout}");
    }

    let server = NatsServer::start();
    let url = server.url().to_string();
    let config = natsapp_wasm::config::Config::load_with_env(root.join("service.toml"), |v| {
        (v == "NATS_SERVERS").then(|| url.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let service = natsapp_wasm::Service::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.run(async {
        let _ = stop.1.await;
    }));
    let client = server.client().await;
    let mut answers = subscribe(&client, &format!("{name}.out")).await;
    js_publish(
        &server.jetstream().await,
        &format!("{name}.in"),
        r#"{"hello":"world"}"#,
    )
    .await;
    assert_eq!(
        next_json(&mut answers, Duration::from_secs(20)).await,
        serde_json::json!({"handled_by": name, "subject": format!("{name}.in"), "received": {"hello": "world"}})
    );
    let _ = stop.0.send(());
    let stats = task.await.unwrap().unwrap();
    assert_eq!(
        (stats.subscribers[0].received, stats.subscribers[0].acked),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rust_project() {
    scaffold_builds_and_handles_a_message(
        "rust",
        &["cargo", "build", "--target", "wasm32-wasip2", "--release"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_python_project() {
    scaffold_builds_and_handles_a_message("python", &["./build.sh"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_js_project() {
    scaffold_builds_and_handles_a_message("js", &["./build.sh"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_c_project() {
    scaffold_builds_and_handles_a_message("c", &["./build.sh"]).await;
}
