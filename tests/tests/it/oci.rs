//! Components from OCI registries: `push oci://…` reads a component a
//! registry holds as a CNCF TAG Runtime Wasm artifact — from a real
//! registry on loopback — and stores it in the object store by its layer's
//! digest; tampered bytes and wrong pins are refused with both digests, and
//! a private repository is read with the credentials of Docker's
//! config.json.

use natsapp_wasm_tests::oci::OciRegistry;
use natsapp_wasm_tests::*;
use std::process::{Command, Output};

/// `natsapp-wasm push SOURCE COMPONENTS/kit --create --plain-http` against
/// `server`, with `extra` arguments and Docker's configuration in `docker`.
fn push(server: &NatsServer, source: &str, docker: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(natsapp_bin())
        .args(["push", source, "COMPONENTS/kit", "--create", "--plain-http"])
        .args(["--server", server.url()])
        .args(extra)
        .env("DOCKER_CONFIG", docker)
        .env_remove("NATSAPP_REGISTRY_PASSWORD")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names in the COMPONENTS object store (none when it does not exist).
async fn stored(server: &NatsServer) -> Vec<String> {
    use futures::StreamExt;
    let js = server.jetstream().await;
    let Ok(store) = js.get_object_store("COMPONENTS").await else {
        return Vec::new();
    };
    let mut names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .map(|info| info.unwrap().name)
        .collect()
        .await;
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stores_a_registrys_component_by_its_layer_digest() {
    let (server, registry) = (NatsServer::start(), OciRegistry::start());
    let docker = tempfile::tempdir().unwrap();
    let component = std::fs::read(guests::TESTKIT).unwrap();
    let layer = natsapp_wasm::config::sha256_hex(&component);
    let manifest = registry.push_component("acme/kit", "v1", &component).await;

    let tagged = format!("oci://{}/acme/kit:v1", registry.host());
    let out = push(&server, &tagged, docker.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        [
            format!("pulled {tagged} (manifest {manifest}, component layer sha256:{layer})"),
            format!(
                "stored COMPONENTS/kit/{layer} ({} bytes); COMPONENTS/kit links to it",
                component.len()
            ),
            format!("component = {{ object = \"COMPONENTS/kit\", sha256 = \"{layer}\" }}"),
        ]
    );
    let js = server.jetstream().await;
    let store = js.get_object_store("COMPONENTS").await.unwrap();
    let mut object = store.get(format!("kit/{layer}").as_str()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
        .await
        .unwrap();
    assert!(bytes == component, "the stored bytes are the component's");

    // By the manifest's digest alone, and by the tag pinned to it: the
    // same version, already stored.
    for source in [
        format!("oci://{}/acme/kit@{manifest}", registry.host()),
        format!("{tagged}@{manifest}"),
    ] {
        let out = push(&server, &source, docker.path(), &[]);
        assert!(out.status.success(), "{source}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("already stored COMPONENTS/kit/{layer}")),
            "{source}: {}",
            stdout(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_or_a_wrong_pin_is_refused_with_both_digests() {
    let (server, registry) = (NatsServer::start(), OciRegistry::start());
    let docker = tempfile::tempdir().unwrap();
    let component = std::fs::read(guests::TESTKIT).unwrap();
    let layer = format!("sha256:{}", natsapp_wasm::config::sha256_hex(&component));
    let manifest = registry.push_component("acme/kit", "v1", &component).await;
    let tagged = format!("oci://{}/acme/kit:v1", registry.host());

    // A pin the tag does not name.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = push(&server, &format!("{tagged}@{wrong}"), docker.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: {tagged}@{wrong}: its tag names manifest {manifest}, not the {wrong} it pins"
        )
    );
    // A digest the registry does not hold.
    let missing = format!("oci://{}/acme/kit@{wrong}", registry.host());
    let out = push(&server, &missing, docker.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot read the manifest of {missing} from its registry"
        )),
        "{}",
        stderr(&out)
    );

    // The registry's copy of the layer altered on its disk, same length.
    let blob = registry.blob_file(&layer);
    let mut tampered = std::fs::read(&blob).unwrap();
    assert!(
        tampered == component,
        "the registry stores the layer as pushed"
    );
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let actual = format!("sha256:{}", natsapp_wasm::config::sha256_hex(&tampered));
    let out = push(&server, &tagged, docker.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: the component layer of {tagged} is {layer}, but the registry sent bytes with digest {actual}")
    );
    assert_eq!(
        stored(&server).await,
        Vec::<String>::new(),
        "nothing is stored"
    );

    // A container image is not a component artifact.
    registry
        .push_artifact(
            "acme/app",
            "v1",
            (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            b"not a component",
        )
        .await;
    let image = format!("oci://{}/acme/app:v1", registry.host());
    let out = push(&server, &image, docker.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: {image} is not a WebAssembly component artifact: its config is application/vnd.oci.image.config.v1+json, not application/vnd.wasm.config.v0+json or application/vnd.wasm.config.v1+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_read_with_docker_config_credentials() {
    let (server, registry) = (NatsServer::start(), OciRegistry::private("ci", "s3cret"));
    let component = std::fs::read(guests::ECHO).unwrap();
    let layer = natsapp_wasm::config::sha256_hex(&component);
    registry
        .push_component("acme/echo", "1.0", &component)
        .await;
    let source = format!("oci://{}/acme/echo:1.0", registry.host());

    // No credentials: the registry refuses, and nothing is stored.
    let empty = tempfile::tempdir().unwrap();
    let out = push(&server, &source, empty.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot read the manifest of {source} from its registry"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(stored(&server).await, Vec::<String>::new());

    // Docker's config.json, as `docker login` writes it.
    let docker = tempfile::tempdir().unwrap();
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host(),
            base64_of("ci:s3cret")
        ),
    )
    .unwrap();
    let out = push(&server, &source, docker.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("stored COMPONENTS/kit/{layer}")),
        "{}",
        stdout(&out)
    );

    // Flags take the place of the file; a wrong password is refused.
    let out = push(
        &server,
        &source,
        empty.path(),
        &["--registry-username", "ci", "--registry-password", "s3cret"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = push(
        &server,
        &source,
        docker.path(),
        &["--registry-username", "ci", "--registry-password", "wrong"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // A config.json that cannot be read is named.
    std::fs::write(docker.path().join("config.json"), "{ not json").unwrap();
    let out = push(&server, &source, docker.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot read the credentials for {} from {}",
            registry.host(),
            docker.path().join("config.json").display()
        )),
        "{}",
        stderr(&out)
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
