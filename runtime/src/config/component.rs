//! Where a subscriber's component comes from: a file on the runtime's disk,
//! or an object in a JetStream Object Store (read at start through the
//! subscriber's connection, by `roster::prepare`).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a subscriber's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A file (absolute path); a pin was checked when the file was read.
    File(PathBuf),
    /// An object in a JetStream Object Store, read through the subscriber's
    /// connection.
    Object {
        /// The object store bucket.
        bucket: String,
        /// The component's name in it.
        name: String,
        /// The version's SHA-256 in hex (`None`: the latest pushed).
        sha256: Option<String>,
    },
}

impl ComponentSource {
    /// The file, when it is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ComponentSource::File(p) => Some(p),
            ComponentSource::Object { .. } => None,
        }
    }
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ComponentSource::File(p) => write!(f, "{}", p.display()),
            ComponentSource::Object {
                bucket,
                name,
                sha256: None,
            } => write!(f, "object {bucket}/{name} (latest)"),
            ComponentSource::Object {
                bucket,
                name,
                sha256: Some(d),
            } => write!(f, "object {bucket}/{name} (sha256 {d})"),
        }
    }
}
