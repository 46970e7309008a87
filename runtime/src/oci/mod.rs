//! Components published to OCI registries as artifacts — the CNCF TAG
//! Runtime Wasm layout that `wkg oci push` and wasmCloud write: a manifest
//! whose config is `application/vnd.wasm.config.v0+json` (or the `v1+json`
//! older clients write) and whose one layer is the component,
//! `application/wasm`. `push oci://…` reads one here, once, and stores it
//! in the object store by digest: replicas never read a registry, so a
//! registry outage cannot stop one from starting.
//!
//! Every digest is checked twice: the OCI client checks what it reads as
//! it reads it, and [`pull`] checks the bytes it hands on against the
//! manifest and the reference, so that what is stored is what was named.

mod credentials;

pub use credentials::{Credentials, CredentialsError};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::{Client, Reference};
use std::fmt;

/// The component layer's media type in the CNCF layout.
pub const WASM_LAYER: &str = "application/wasm";
/// The layer media type written before the CNCF layout settled (and by
/// the OCI client's own wasm helpers).
const WASM_LAYER_LEGACY: &str = oci_client::manifest::WASM_LAYER_MEDIA_TYPE;
/// Config media types of a component artifact: the CNCF layout's `v0+json`
/// and the OCI client's `v1+json`.
pub const WASM_CONFIGS: [&str; 2] = [
    "application/vnd.wasm.config.v0+json",
    oci_client::manifest::WASM_CONFIG_MEDIA_TYPE,
];

/// The largest component layer read: far past any handler (a Python
/// component with its interpreter is about 40 MB), short of what would
/// exhaust memory on a small machine.
pub const MAX_COMPONENT: u64 = 512 * 1024 * 1024;

/// `oci://REGISTRY/REPOSITORY:TAG`, `oci://REGISTRY/REPOSITORY@sha256:…`,
/// or both: the tag is read and must name that manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciReference {
    /// What the manifest is read by: the tag when there is one, else the digest.
    read: Reference,
    /// The manifest digest (`sha256:…`) the reference pins, if any.
    pin: Option<String>,
}

/// Why a component could not be read from a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference cannot be read.
    #[error("{text:?} is not oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:DIGEST: {reason}")]
    Reference {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry's credentials cannot be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The registry refused or failed a request.
    #[error("cannot read the {what} of {reference} from its registry")]
    Registry {
        /// The reference.
        reference: String,
        /// The manifest or a layer.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<OciDistributionError>,
    },
    /// The manifest's bytes are not the ones its digest names.
    #[error("the manifest of {reference} is {expected}, but the registry sent bytes with digest {actual}")]
    ManifestDigest {
        /// The reference.
        reference: String,
        /// The digest asked for, or the one the registry gave.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The tag names another manifest than the one the reference pins.
    #[error("{reference}: its tag names manifest {actual}, not the {pinned} it pins")]
    Pin {
        /// The reference.
        reference: String,
        /// The digest it pins.
        pinned: String,
        /// The digest of the manifest the tag names.
        actual: String,
    },
    /// The manifest is not a component artifact.
    #[error("{reference} is not a WebAssembly component artifact: {reason}")]
    NotAComponent {
        /// The reference.
        reference: String,
        /// What its manifest holds instead.
        reason: String,
    },
    /// The layer's bytes are not the ones its digest names.
    #[error("the component layer of {reference} is {expected}, but the registry sent bytes with digest {actual}")]
    LayerDigest {
        /// The reference.
        reference: String,
        /// The layer's digest in the manifest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
}

impl RegistryError {
    /// True when what was given (the reference, the credentials file, the
    /// artifact), not the registry's availability, is at fault.
    pub fn is_input(&self) -> bool {
        !matches!(self, RegistryError::Registry { .. })
    }
}

impl OciReference {
    /// Reads `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`; with
    /// neither a tag nor a digest, the tag is `latest`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let refused = |reason: &str| RegistryError::Reference {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| refused("it does not start with oci://"))?;
        let (host, _) = rest
            .split_once('/')
            .ok_or_else(|| refused("it names no repository"))?;
        // Without a dot or a port the parser would read the host as part of
        // a Docker Hub repository.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(refused(
                "name the registry's host, such as ghcr.io or 127.0.0.1:5000",
            ));
        }
        let parsed: Reference = rest
            .parse()
            .map_err(|e: oci_client::ParseError| refused(&e.to_string()))?;
        let pin = parsed.digest().map(str::to_string);
        // The parser checks a digest's form; only SHA-256 names what the
        // object store names a version by.
        if pin.as_ref().is_some_and(|pin| !pin.starts_with("sha256:")) {
            return Err(refused("its digest is not sha256:"));
        }
        let (registry, repository) = (
            parsed.registry().to_string(),
            parsed.repository().to_string(),
        );
        let read = match (parsed.tag(), &pin) {
            (Some(tag), _) => Reference::with_tag(registry, repository, tag.to_string()),
            (None, Some(pin)) => Reference::with_digest(registry, repository, pin.clone()),
            (None, None) => Reference::with_tag(registry, repository, "latest".into()),
        };
        Ok(OciReference { read, pin })
    }

    /// The registry's host (and port), as credentials are keyed.
    pub fn registry(&self) -> &str {
        self.read.registry()
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oci://{}/{}",
            self.read.registry(),
            self.read.repository()
        )?;
        if let Some(tag) = self.read.tag() {
            write!(f, ":{tag}")?;
        }
        if let Some(pin) = &self.pin {
            write!(f, "@{pin}")?;
        }
        Ok(())
    }
}

/// A component read from a registry, with the digests that name it.
pub struct Pulled {
    /// The component.
    pub bytes: Vec<u8>,
    /// The manifest's digest, `sha256:…`.
    pub manifest: String,
    /// The component layer's digest, `sha256:…`: that of `bytes`.
    pub layer: String,
}

/// How to reach a registry.
pub struct Access {
    /// Who to be.
    pub credentials: Credentials,
    /// Plain HTTP instead of HTTPS (a registry on loopback).
    pub plain_http: bool,
}

/// Reads the component `reference` names, checking every digest.
pub async fn pull(reference: &OciReference, access: &Access) -> Result<Pulled, RegistryError> {
    // The OCI client's TLS leaves the choice of crypto to its user; the
    // runtime's other TLS (guests' outbound HTTP) uses ring too. Only the
    // first install counts, so this one is harmless if another came first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: if access.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        user_agent: concat!("natsapp-wasm/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    });
    let auth = access.credentials.registry_auth();
    // The client's own digest checks, told as ours: `mismatch` makes the
    // error for (expected, actual), and other failures are the registry's.
    let failed = |what, mismatch: fn(String, String, String) -> RegistryError| {
        move |e| match e {
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => mismatch(reference.to_string(), expected, actual),
            e => RegistryError::Registry {
                reference: reference.to_string(),
                what,
                source: Box::new(e),
            },
        }
    };
    let (manifest, digest) = client
        .pull_image_manifest(&reference.read, &auth)
        .await
        .map_err(failed("manifest", |reference, expected, actual| {
            RegistryError::ManifestDigest {
                reference,
                expected,
                actual,
            }
        }))?;
    if let Some(pinned) = &reference.pin {
        if *pinned != digest {
            return Err(RegistryError::Pin {
                reference: reference.to_string(),
                pinned: pinned.clone(),
                actual: digest,
            });
        }
    }
    let layer = component_layer(reference, &manifest)?;
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > MAX_COMPONENT {
        return Err(RegistryError::NotAComponent {
            reference: reference.to_string(),
            reason: format!(
                "its component layer is {size} bytes, past the {MAX_COMPONENT} a handler may be"
            ),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    client
        .pull_blob(&reference.read, layer, &mut bytes)
        .await
        .map_err(failed("component layer", |reference, expected, actual| {
            RegistryError::LayerDigest {
                reference,
                expected,
                actual,
            }
        }))?;
    let actual = format!("sha256:{}", crate::config::sha256_hex(&bytes));
    if actual != layer.digest {
        return Err(RegistryError::LayerDigest {
            reference: reference.to_string(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(Pulled {
        bytes,
        manifest: digest,
        layer: actual,
    })
}

/// The manifest's one component layer, once its config says it is a
/// component artifact.
fn component_layer<'m>(
    reference: &OciReference,
    manifest: &'m OciImageManifest,
) -> Result<&'m OciDescriptor, RegistryError> {
    let refused = |reason: String| RegistryError::NotAComponent {
        reference: reference.to_string(),
        reason,
    };
    let config = manifest.config.media_type.as_str();
    if !WASM_CONFIGS.contains(&config) {
        return Err(refused(format!(
            "its config is {config}, not {}",
            WASM_CONFIGS.join(" or ")
        )));
    }
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == WASM_LAYER || l.media_type == WASM_LAYER_LEGACY);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) if !layer.digest.starts_with("sha256:") => Err(refused(format!(
            "its layer's digest {} is not sha256",
            layer.digest
        ))),
        (Some(layer), None) => Ok(layer),
        (None, _) => Err(refused(format!(
            "it has no {WASM_LAYER} layer (layers: {})",
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        (Some(_), Some(_)) => Err(refused(format!("it has more than one {WASM_LAYER} layer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_and_a_tag_a_digest_or_both() {
        let pin = format!("sha256:{}", "a".repeat(64));
        for (text, shown) in [
            ("oci://ghcr.io/acme/kit:1.2", "oci://ghcr.io/acme/kit:1.2"),
            (
                "oci://127.0.0.1:5000/kit",
                "oci://127.0.0.1:5000/kit:latest",
            ),
            (
                &format!("oci://127.0.0.1:5000/a/kit@{pin}"),
                &format!("oci://127.0.0.1:5000/a/kit@{pin}"),
            ),
            (
                &format!("oci://127.0.0.1:5000/kit:v1@{pin}"),
                &format!("oci://127.0.0.1:5000/kit:v1@{pin}"),
            ),
        ] {
            assert_eq!(
                OciReference::parse(text).unwrap().to_string(),
                shown,
                "{text}"
            );
        }
        let tagged = OciReference::parse(&format!("oci://127.0.0.1:5000/kit:v1@{pin}")).unwrap();
        assert_eq!(
            (tagged.read.tag(), tagged.read.digest()),
            (Some("v1"), None),
            "the tag is read"
        );
        assert_eq!(tagged.registry(), "127.0.0.1:5000");
    }

    #[test]
    fn a_reference_that_is_not_one_says_why() {
        for (text, reason) in [
            ("ghcr.io/acme/kit:1", "it does not start with oci://"),
            ("oci://ghcr.io", "it names no repository"),
            ("oci://acme/kit:1", "name the registry's host"),
            (
                &format!("oci://ghcr.io/acme/kit@sha512:{}", "a".repeat(128)),
                "its digest is not sha256:",
            ),
            (
                "oci://ghcr.io/acme/kit@sha512:ab",
                "invalid reference format",
            ),
            (
                "oci://ghcr.io/acme/kit@sha256:abc",
                "invalid reference format",
            ),
        ] {
            let error = OciReference::parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{text:?} is not oci://")),
                "{error}"
            );
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
