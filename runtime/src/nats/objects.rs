//! Components in a JetStream Object Store. `push` stores each version
//! under `NAME/<sha256-hex>` and never overwrites one — async-nats' `put`
//! to an existing name purges the old chunks, so a replica reading that
//! version, or a rollback to it, would find nothing — and points the link
//! `NAME` at the version pushed last. A subscriber's
//! `component = { object = "BUCKET/NAME", sha256 = "…" }` reads
//! `NAME/<sha256>` (unpinned: what `NAME` links to) through the
//! subscriber's own connection; the bytes' SHA-256 must equal the pin,
//! the digest in the version's name and the object store's own digest.

use super::unavailable;
use async_nats::jetstream::context::{CreateObjectStoreError, ObjectStoreError};
use async_nats::jetstream::object_store::{InfoErrorKind, ObjectInfo, ObjectStore};
use async_nats::jetstream::{self, object_store};
use base64::Engine;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// An error from async-nats, with its chain of causes.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The name of the version of `name` whose bytes have SHA-256 `digest`.
pub fn version_name(name: &str, digest: &str) -> String {
    format!("{name}/{digest}")
}

/// A component read from an object store.
#[derive(Debug)]
pub struct Fetched {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Their SHA-256, in hex.
    pub digest: String,
    /// The object they were read from (a version's name).
    pub object: String,
}

/// A component stored by [`push`].
#[derive(Debug)]
pub struct Pushed {
    /// The version's object name.
    pub object: String,
    /// Its SHA-256, in hex.
    pub digest: String,
    /// False when that version was there already (nothing was written but
    /// the link).
    pub stored: bool,
}

/// Why a component could not be read from, or stored in, an object store.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The bucket cannot be opened.
    #[error("object store {bucket:?} cannot be opened")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: ObjectStoreError,
    },
    /// The bucket cannot be created.
    #[error("object store {bucket:?} cannot be created")]
    Create {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: CreateObjectStoreError,
    },
    /// No such object (or version).
    #[error("object store {bucket:?} has no {what}")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// What was looked for.
        what: String,
    },
    /// The object store did not answer as expected.
    #[error("cannot {doing} {object:?} in object store {bucket:?}")]
    Failed {
        /// The bucket.
        bucket: String,
        /// The object.
        object: String,
        /// What was being done.
        doing: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The object is larger than allowed.
    #[error("{object:?} in object store {bucket:?} holds {size} bytes, more than the {most} its tenant's component_size quota allows")]
    TooLarge {
        /// The bucket.
        bucket: String,
        /// The object.
        object: String,
        /// Its size.
        size: u64,
        /// The quota.
        most: u64,
    },
    /// The bytes are not the ones named.
    #[error("{object:?} in object store {bucket:?} has SHA-256 {have}, but {by} says {want}: refusing a component that is not the one named")]
    Digest {
        /// The bucket.
        bucket: String,
        /// The object read.
        object: String,
        /// The SHA-256 of its bytes.
        have: String,
        /// What it should have been.
        want: String,
        /// Who said so.
        by: &'static str,
    },
}

/// How long a read keeps trying while NATS is unavailable (a node of the
/// cluster down, a stream without a leader) before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

impl ObjectError {
    /// Whether NATS, not the object, is at fault: worth trying again.
    pub fn unavailable(&self) -> bool {
        match self {
            ObjectError::Bucket { source, .. } => !unavailable::stream_missing(source),
            ObjectError::Failed { .. } => true,
            _ => false,
        }
    }
}

/// Runs `read` until it succeeds, fails for another reason than NATS being
/// unavailable, or [`PATIENCE`] runs out.
async fn patiently<T, F: std::future::Future<Output = Result<T, ObjectError>>>(
    js: &jetstream::Context,
    what: impl Fn() -> String,
    read: impl FnMut() -> F,
) -> Result<T, ObjectError> {
    unavailable::patiently(&js.client(), PATIENCE, what, read, ObjectError::unavailable).await
}

async fn open(js: &jetstream::Context, bucket: &str) -> Result<ObjectStore, ObjectError> {
    js.get_object_store(bucket)
        .await
        .map_err(|source| ObjectError::Bucket {
            bucket: bucket.to_string(),
            source,
        })
}

/// The info of `object`, or `None` when there is none (or it was deleted).
async fn info(
    store: &ObjectStore,
    bucket: &str,
    object: &str,
) -> Result<Option<ObjectInfo>, ObjectError> {
    match store.info(object).await {
        Ok(info) if info.deleted => Ok(None),
        Ok(info) => Ok(Some(info)),
        Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(ObjectError::Failed {
            bucket: bucket.to_string(),
            object: object.to_string(),
            doing: "look up",
            source: Box::new(e),
        }),
    }
}

/// The object `name` stands for: itself, or the version it links to.
async fn target(store: &ObjectStore, bucket: &str, name: &str) -> Result<ObjectInfo, ObjectError> {
    let not_found = |what: String| ObjectError::NotFound {
        bucket: bucket.to_string(),
        what,
    };
    let info = info(store, bucket, name).await?.ok_or_else(|| {
        not_found(format!(
            "{name:?} (push a component to it with `natsapp-wasm push FILE {bucket}/{name}`)"
        ))
    })?;
    let Some(link) = info.options.as_ref().and_then(|o| o.link.as_ref()) else {
        return Ok(info);
    };
    match (&link.name, link.bucket == bucket) {
        (Some(linked), true) => info_of(store, bucket, linked, name).await,
        _ => Err(not_found(format!(
            "{name:?} but a link to another bucket, which a component may not be"
        ))),
    }
}

async fn info_of(
    store: &ObjectStore,
    bucket: &str,
    object: &str,
    linked_from: &str,
) -> Result<ObjectInfo, ObjectError> {
    info(store, bucket, object)
        .await?
        .ok_or_else(|| ObjectError::NotFound {
            bucket: bucket.to_string(),
            what: format!("{object:?}, which {linked_from:?} links to"),
        })
}

/// The object store's own digest of an object, in hex.
fn stored_digest(info: &ObjectInfo) -> Option<String> {
    let encoded = info.digest.as_deref()?.strip_prefix("SHA-256=")?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .ok()?;
    Some(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest in a version's name (`NAME/<sha256-hex>`), if it is one.
fn named_digest(object: &str) -> Option<&str> {
    let (_, tail) = object.rsplit_once('/')?;
    (tail.len() == 64 && tail.bytes().all(|b| b.is_ascii_hexdigit())).then_some(tail)
}

/// The object that `name` pinned at `pin` (or, unpinned, its latest
/// version) is read from.
async fn version(
    store: &ObjectStore,
    bucket: &str,
    name: &str,
    pin: Option<&str>,
) -> Result<ObjectInfo, ObjectError> {
    let Some(pin) = pin else {
        return target(store, bucket, name).await;
    };
    if let Some(info) = info(store, bucket, &version_name(name, pin)).await? {
        return Ok(info);
    }
    // An object put under `name` by another tool, with the pinned bytes.
    match info(store, bucket, name).await? {
        Some(info) if stored_digest(&info).as_deref() == Some(pin) => Ok(info),
        _ => Err(ObjectError::NotFound {
            bucket: bucket.to_string(),
            what: format!("version {pin} of {name:?}"),
        }),
    }
}

/// The SHA-256 of the component `name` pinned at `pin` (or, unpinned,
/// of its latest version), without reading its bytes; tried again while
/// NATS is unavailable.
pub async fn digest_of(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    pin: Option<&str>,
) -> Result<String, ObjectError> {
    if let Some(pin) = pin {
        return Ok(pin.to_string());
    }
    patiently(
        js,
        || format!("looking up {bucket}/{name}"),
        || latest_digest(js, bucket, name),
    )
    .await
}

async fn latest_digest(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
) -> Result<String, ObjectError> {
    let store = open(js, bucket).await?;
    let info = target(&store, bucket, name).await?;
    match named_digest(&info.name)
        .map(str::to_string)
        .or_else(|| stored_digest(&info))
    {
        Some(digest) => Ok(digest),
        None => Ok(fetch_once(js, bucket, name, None, None).await?.digest),
    }
}

/// Reads the component `name` pinned at `pin` (or, unpinned, its latest
/// version) from object store `bucket`, and checks its SHA-256; one
/// larger than `most` bytes is refused before it is read. Tried again
/// while NATS is unavailable: a node down during a deploy is no reason to
/// refuse it.
pub async fn fetch(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    pin: Option<&str>,
    most: Option<u64>,
) -> Result<Fetched, ObjectError> {
    patiently(
        js,
        || format!("reading {bucket}/{name}"),
        || fetch_once(js, bucket, name, pin, most),
    )
    .await
}

async fn fetch_once(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    pin: Option<&str>,
    most: Option<u64>,
) -> Result<Fetched, ObjectError> {
    let store = open(js, bucket).await?;
    let info = version(&store, bucket, name, pin).await?;
    let too_large = |size: u64| {
        most.filter(|m| size > *m)
            .map(|most| ObjectError::TooLarge {
                bucket: bucket.to_string(),
                object: info.name.clone(),
                size,
                most,
            })
    };
    if let Some(e) = too_large(info.size as u64) {
        return Err(e);
    }
    let failed = |doing, source: BoxError| ObjectError::Failed {
        bucket: bucket.to_string(),
        object: info.name.clone(),
        doing,
        source,
    };
    let mut object = store
        .get(&info.name)
        .await
        .map_err(|e| failed("read", Box::new(e)))?;
    let mut bytes = Vec::with_capacity(info.size);
    // The size in its info is the writer's word: read no more than allowed.
    let limit = most.map_or(u64::MAX, |m| m.saturating_add(1));
    (&mut object)
        .take(limit)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| failed("read", Box::new(e)))?;
    if let Some(e) = too_large(bytes.len() as u64) {
        return Err(e);
    }
    let have = crate::config::sha256_hex(&bytes);
    let claims = [
        (pin.map(str::to_string), "the pin"),
        (named_digest(&info.name).map(str::to_string), "its name"),
        (stored_digest(&info), "the object store"),
    ];
    for (want, by) in claims {
        if let Some(want) = want.filter(|w| *w != have) {
            return Err(ObjectError::Digest {
                bucket: bucket.to_string(),
                object: info.name.clone(),
                have,
                want,
                by,
            });
        }
    }
    Ok(Fetched {
        bytes,
        digest: have,
        object: info.name,
    })
}

/// Stores `bytes` as a version of `name` in object store `bucket` (created
/// with `replicas` when it is missing and `create` is given), unless that
/// version is there already, and links `name` to it. Tried again while
/// NATS is unavailable: a version half stored is stored again whole.
pub async fn push(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    bytes: &[u8],
    create: Option<usize>,
) -> Result<Pushed, ObjectError> {
    patiently(
        js,
        || format!("storing {bucket}/{name}"),
        || push_once(js, bucket, name, bytes, create),
    )
    .await
}

async fn push_once(
    js: &jetstream::Context,
    bucket: &str,
    name: &str,
    bytes: &[u8],
    create: Option<usize>,
) -> Result<Pushed, ObjectError> {
    let store = match (js.get_object_store(bucket).await, create) {
        (Ok(store), _) => store,
        (Err(e), Some(replicas)) if unavailable::stream_missing(&e) => js
            .create_object_store(object_store::Config {
                bucket: bucket.to_string(),
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| ObjectError::Create {
                bucket: bucket.to_string(),
                source,
            })?,
        (Err(source), _) => {
            return Err(ObjectError::Bucket {
                bucket: bucket.to_string(),
                source,
            })
        }
    };
    let digest = crate::config::sha256_hex(bytes);
    let object = version_name(name, &digest);
    let failed = |doing, source: BoxError| ObjectError::Failed {
        bucket: bucket.to_string(),
        object: object.clone(),
        doing,
        source,
    };
    let (info, stored) = match info(&store, bucket, &object).await? {
        Some(info) => (info, false),
        None => {
            let info = store
                .put(object.as_str(), &mut &bytes[..])
                .await
                .map_err(|e| failed("store", Box::new(e)))?;
            (info, true)
        }
    };
    store
        .add_link(name, &info)
        .await
        .map_err(|e| ObjectError::Failed {
            bucket: bucket.to_string(),
            object: name.to_string(),
            doing: "link the latest version as",
            source: Box::new(e),
        })?;
    Ok(Pushed {
        object,
        digest,
        stored,
    })
}
