//! A real OCI registry on loopback — the CNCF distribution registry,
//! Debian's `docker-registry`, which ./scripts/install-prereqs.sh unpacks
//! into .tools/bin — with a configuration file this writes, and
//! a push of a component into it as a CNCF TAG Runtime Wasm artifact with
//! the same OCI client the runtime reads with.

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry process and its storage, stopped when dropped.
pub struct OciRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: Option<(String, String)>,
}

impl OciRegistry {
    /// Starts a registry that anyone may read and write.
    pub fn start() -> OciRegistry {
        Self::start_with(None)
    }

    /// Starts a registry that only `user` with `password` may use
    /// (htpasswd authentication, as a private repository needs).
    pub fn private(user: &str, password: &str) -> OciRegistry {
        Self::start_with(Some((user.to_string(), password.to_string())))
    }

    fn start_with(user: Option<(String, String)>) -> OciRegistry {
        let dir = tempfile::tempdir().unwrap();
        let auth = match &user {
            None => String::new(),
            Some((name, password)) => {
                let hash = bcrypt::hash(password, 4).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{name}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: natsapp-tests\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
        };
        // A port another process may take between this probe and the
        // registry's bind: then the registry exits and another is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: natsapp-tests\n{auth}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(crate::repo_root().join(".tools/bin/docker-registry"))
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run .tools/bin/docker-registry ({e}): run ./scripts/install-prereqs.sh")
                });
            if wait_until_up(&mut child, port, &dir.path().join("registry.log")) {
                return OciRegistry {
                    child,
                    port,
                    dir,
                    user,
                };
            }
            let _ = child.wait();
        }
        panic!("docker-registry did not start on any of five ports");
    }

    /// `127.0.0.1:PORT`, as references and Docker's config.json name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `component` as `repository:tag` in the CNCF layout (config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm`
    /// layer); the manifest's digest.
    pub async fn push_component(&self, repository: &str, tag: &str, component: &[u8]) -> String {
        self.push_artifact(
            repository,
            tag,
            ("application/vnd.wasm.config.v0+json", "application/wasm"),
            component,
        )
        .await
    }

    /// Pushes `layer` as `repository:tag` with the config and layer media
    /// types `(config, layer)`; the manifest's digest.
    pub async fn push_artifact(
        &self,
        repository: &str,
        tag: &str,
        (config_type, layer_type): (&str, &str),
        layer: &[u8],
    ) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match &self.user {
            None => RegistryAuth::Anonymous,
            Some((name, password)) => RegistryAuth::Basic(name.clone(), password.clone()),
        };
        let reference = Reference::with_tag(self.host(), repository.into(), tag.into());
        let layer = ImageLayer::new(layer.to_vec(), layer_type.into(), None);
        let config = Config::new(
            br#"{"architecture":"wasm","os":"wasip2","layerDigests":[]}"#.to_vec(),
            config_type.into(),
            None,
        );
        let manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        let pushed = client
            .push(&reference, &[layer], config, &auth, Some(manifest))
            .await
            .unwrap_or_else(|e| panic!("cannot push {reference}: {e}"));
        let digest = client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .unwrap_or_else(|e| panic!("cannot read the digest of {reference}: {e}"));
        assert!(pushed.manifest_url.contains(repository));
        digest
    }
}

/// Whether the registry `child` listens on `port` before it exits; panics
/// with its log when it neither listens nor exits within 10 s.
fn wait_until_up(child: &mut Child, port: u16, log: &std::path::Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if answers_as_registry(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!(
        "docker-registry did not listen within 10 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Whether what listens on `port` is a registry (and not another test's
/// server that took the port first).
fn answers_as_registry(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("Docker-Distribution-Api-Version")
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
