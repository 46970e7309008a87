//! The stack natsapp-wasm replaces: nats-py and FastStream consumers
//! (py_consumers.py), from their own virtual environment.

use super::*;

/// The Python environment with nats-py and FastStream, installed on first use.
pub(crate) fn python_baselines() -> Option<PathBuf> {
    let venv = root().join("target/bench-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import nats, faststream"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ok(&python) {
        return Some(python);
    }
    let created = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "nats-py==2.16.0",
                "faststream[nats]==0.7.8",
            ])
            .status()
            .is_ok_and(|s| s.success());
    (installed && ok(&python)).then_some(python)
}

pub(crate) async fn python_throughput(
    server: &NatsServer,
    js: &jetstream::Context,
    python: &Path,
    kind: &str,
    n: usize,
) -> (f64, f64) {
    let stream = crate::broker::fresh(&format!("PY{}", kind.replace('-', "").to_uppercase()));
    let subject = format!("{}.in", stream.to_lowercase());
    preload(js, &stream, &subject, n).await;
    let child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/throughput/py_consumers.py"))
        .args([kind, server.url(), &stream, &subject, "py", &n.to_string()])
        .spawn()
        .unwrap();
    let took = time_drain(js, &stream, "py", n).await;
    let (peak, _) = rss_mib(child.id());
    let mut child = child;
    let _ = child.wait();
    delete_streams(js, &[&stream]).await;
    (n as f64 / took.as_secs_f64(), peak)
}
