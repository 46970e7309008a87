//! Who to be at a registry: a user and password given on the command line,
//! else what Docker's `config.json` holds for the registry (`auths`, a
//! credential helper or store — read as other OCI clients read it, from
//! `$DOCKER_CONFIG` or `~/.docker`), else no one: a registry that allows
//! anonymous reads needs nothing.

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;
use std::fmt;
use std::path::PathBuf;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: the registry must allow anonymous reads.
    Anonymous,
    /// A user and password (HTTP Basic, or exchanged for a token when the
    /// registry asks for one).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
        }
    }
}

/// Why Docker's configuration gave no usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file or a credential helper failed.
    #[error("cannot read the credentials for {registry} from {config}")]
    Read {
        /// The registry.
        registry: String,
        /// The configuration file.
        config: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file holds an identity token, which is a refresh token for an
    /// OAuth flow the OCI client does not run.
    #[error("{config} holds an identity token for {registry}, which natsapp-wasm cannot use: give --registry-username and --registry-password")]
    IdentityToken {
        /// The registry.
        registry: String,
        /// The configuration file.
        config: String,
    },
}

/// Docker's configuration file, as the Docker CLI finds it.
pub fn docker_config() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
        .unwrap_or_default()
        .join("config.json")
}

impl Credentials {
    /// The credentials for `registry`: `given` (from the command line)
    /// when there are some, else Docker's, else none.
    pub fn for_registry(
        registry: &str,
        given: Option<(String, String)>,
    ) -> Result<Credentials, CredentialsError> {
        if let Some((username, password)) = given {
            return Ok(Credentials::Basic { username, password });
        }
        let path = docker_config();
        let config = || path.display().to_string();
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials::Anonymous)
            }
            Err(e) => {
                return Err(CredentialsError::Read {
                    registry: registry.to_string(),
                    config: config(),
                    source: Box::new(e),
                })
            }
        };
        match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), registry)
        {
            Ok(DockerCredential::UsernamePassword(username, password)) => {
                Ok(Credentials::Basic { username, password })
            }
            Ok(DockerCredential::IdentityToken(_)) => Err(CredentialsError::IdentityToken {
                registry: registry.to_string(),
                config: config(),
            }),
            Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(Credentials::Anonymous),
            // A credential store (`credsStore`: the desktop keychains) that
            // holds nothing for this registry: read it anonymously, as the
            // Docker CLI does.
            Err(CredentialRetrievalError::HelperFailure { stdout, stderr, .. })
                if format!("{stdout}{stderr}").contains("credentials not found") =>
            {
                Ok(Credentials::Anonymous)
            }
            Err(source) => Err(CredentialsError::Read {
                registry: registry.to_string(),
                config: config(),
                source: Box::new(source),
            }),
        }
    }

    /// What the OCI client takes.
    pub(super) fn registry_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}
