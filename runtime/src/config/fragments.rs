//! Step 1b of reading service.toml: fragments from key-value keys — the
//! platform's `include = [{ kv, keys }]` and each tenant's
//! `deploy = { kv, keys }` — each holding what an included file holds.
//! The runtime reads and watches the keys (`deploy`); here a fragment's
//! text joins the file like an included file's, marked with its key and
//! revision. A tenant's fragment is read with the tenant's identity and
//! may declare only subscribers of that tenant, whose components are
//! objects in its own account, and streams and buckets, declared in its
//! account: no `[[tenants]]`, no `[[publishers]]`, no `${…}` (the
//! platform's environment is not the tenant's to read), no file paths
//! (nor its disk).

use super::include::add_streams_and_buckets;
use super::interpolate::interpolate;
use super::raw::{RawComponent, RawFile, RawInclude};
use super::ComponentSource;
use super::{interpolation_error, syntax_error, ConfigError, Problem};
use std::fmt;
use std::path::{Path, PathBuf};

/// Which key a fragment is read from: whose bucket, which key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragmentKey {
    /// The tenant whose `deploy` bucket it is (`None`: the platform's `include`).
    pub tenant: Option<String>,
    /// The key-value bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
}

impl fmt::Display for FragmentKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.tenant {
            None => write!(f, "{}/{}", self.bucket, self.key),
            Some(t) => write!(f, "tenant {t:?}'s {}/{}", self.bucket, self.key),
        }
    }
}

/// A fragment at one revision of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Where it is read from.
    pub key: FragmentKey,
    /// The key's revision it is.
    pub revision: u64,
    /// Its TOML.
    pub text: String,
}

impl Fragment {
    /// How errors and logs name it.
    pub fn origin(&self) -> PathBuf {
        PathBuf::from(format!("{} (revision {})", self.key, self.revision))
    }
}

/// The keys of a bucket that hold fragments, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvKeys {
    /// The key-value bucket.
    pub bucket: String,
    /// A key, or a pattern with `*` (one token) and `>` (the rest).
    pub keys: String,
}

impl KvKeys {
    /// Whether `key` is one of these keys.
    pub fn matches(&self, key: &str) -> bool {
        let mut pattern = self.keys.split('.');
        let mut tokens = key.split('.');
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// A component a fragment names by its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalComponent {
    /// The subscriber or endpoint.
    pub subscriber: String,
    /// The file, relative to the fragment's folder unless absolute.
    pub path: PathBuf,
}

/// Checks `text` as a fragment read from `origin` — the syntax, keys and
/// value formats of an included file — and lists the components it names
/// by file.
pub fn local_components(origin: &Path, text: &str) -> Result<Vec<LocalComponent>, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(origin, text, "", &e))?;
    let included: RawInclude = serde_path_to_error::deserialize(de)
        .map_err(|e| syntax_error(origin, text, &e.path().to_string(), e.inner()))?;
    let handlers = (included
        .subscribers
        .into_iter()
        .map(|s| (s.name, s.component)))
    .chain(
        included
            .endpoints
            .into_iter()
            .map(|e| (e.name, e.component)),
    );
    Ok(handlers
        .filter_map(|(name, component)| match component {
            RawComponent::Path(path) | RawComponent::Pinned { path, .. } => Some(LocalComponent {
                subscriber: name,
                path,
            }),
            RawComponent::Object { .. } => None,
        })
        .collect())
}

/// A component a fragment names as an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedObject {
    /// The subscriber or endpoint.
    pub subscriber: String,
    /// The subscriber's `tenant`, as the fragment states it.
    pub tenant: Option<String>,
    /// Where it is, as the subscriber names it.
    pub source: ComponentSource,
}

/// The components `text`, a fragment, names as objects in their
/// `BUCKET/NAME` form; none when it does not parse as a fragment (its
/// apply says why).
pub fn named_objects(text: &str) -> Vec<NamedObject> {
    let Ok(included) = toml::from_str::<RawInclude>(text) else {
        return Vec::new();
    };
    let handlers = (included.subscribers.into_iter())
        .map(|s| (s.name, s.tenant, s.component))
        .chain((included.endpoints.into_iter()).map(|e| (e.name, e.tenant, e.component)));
    handlers
        .filter_map(|(handler, tenant, component)| match component {
            RawComponent::Object { object, sha256 } => {
                let (bucket, name) = object.split_once('/')?;
                Some(NamedObject {
                    subscriber: handler,
                    tenant,
                    source: ComponentSource::Object {
                        bucket: bucket.to_string(),
                        name: name.to_string(),
                        sha256: sha256.map(|d| d.trim().to_ascii_lowercase()),
                    },
                })
            }
            RawComponent::Path(_) | RawComponent::Pinned { .. } => None,
        })
        .collect()
}

/// `text` with the component of each subscriber and endpoint in `objects` (name →
/// `BUCKET/NAME` and SHA-256) replaced by that object.
pub fn with_objects(
    text: &str,
    objects: &std::collections::BTreeMap<String, (String, String)>,
) -> Result<String, toml::de::Error> {
    let mut doc: toml::Table = toml::from_str(text)?;
    for section in ["subscribers", "endpoints"] {
        let Some(toml::Value::Array(handlers)) = doc.get_mut(section) else {
            continue;
        };
        for s in handlers.iter_mut().filter_map(toml::Value::as_table_mut) {
            let name = s
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_string);
            if let Some((object, sha256)) = name.and_then(|n| objects.get(&n)) {
                let mut component = toml::Table::new();
                component.insert("object".into(), object.clone().into());
                component.insert("sha256".into(), sha256.clone().into());
                s.insert("component".into(), toml::Value::Table(component));
            }
        }
    }
    Ok(toml::to_string(&doc).expect("a table parsed from TOML serializes"))
}

/// Adds what every fragment declares to `raw`, marking where each came
/// from, and a tenant's streams and buckets as its own.
pub(super) fn add_fragments(
    raw: &mut RawFile,
    fragments: &[Fragment],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for fragment in fragments {
        let origin = fragment.origin();
        let refuse = |key: &str, message: String| ConfigError::Invalid {
            path: origin.clone(),
            problems: vec![Problem {
                key: key.to_string(),
                message,
            }],
        };
        let most = super::defaults::TENANT_FRAGMENT_SIZE;
        if fragment.key.tenant.is_some() && fragment.text.len() > most {
            return Err(refuse(
                "",
                format!(
                    "a tenant's fragment may hold at most {most} bytes; this one holds {}",
                    fragment.text.len()
                ),
            ));
        }
        let text = match &fragment.key.tenant {
            None => interpolate(&fragment.text, env)
                .map_err(|e| interpolation_error(&origin, &fragment.text, e))?,
            Some(_) if fragment.text.contains("${") => {
                return Err(refuse(
                    "${…}",
                    "a tenant's fragment may not read the platform's environment".into(),
                ))
            }
            Some(_) => fragment.text.clone(),
        };
        let de =
            toml::Deserializer::parse(&text).map_err(|e| syntax_error(&origin, &text, "", &e))?;
        let included: RawInclude = serde_path_to_error::deserialize(de)
            .map_err(|e| syntax_error(&origin, &text, &e.path().to_string(), e.inner()))?;
        if let Some(tenant) = &fragment.key.tenant {
            if !included.tenants.is_empty() {
                return Err(refuse(
                    "tenants",
                    format!("tenant {tenant:?}'s fragment may not declare tenants"),
                ));
            }
            if !included.publishers.is_empty() {
                return Err(refuse(
                    "publishers",
                    format!("tenant {tenant:?}'s fragment may not declare publishers: a stream it declares makes its handlers' publishes to that stream wait for a PubAck"),
                ));
            }
        }
        for mut t in included.tenants {
            t.origin = Some(origin.clone());
            raw.tenants.push(t);
        }
        // A tenant's fragment declares its own handlers, from its own objects.
        let owned = |section: &str,
                     i: usize,
                     name: &str,
                     whose: &mut Option<String>,
                     component: &RawComponent| {
            let Some(tenant) = &fragment.key.tenant else {
                return Ok(());
            };
            let key = format!("{section}[{i}] ({name:?})");
            match whose {
                Some(other) if other != tenant => {
                    return Err(refuse(
                        &format!("{key}.tenant"),
                        format!("tenant {tenant:?}'s fragment may declare only its own {section}, not tenant {other:?}'s"),
                    ))
                }
                _ => *whose = Some(tenant.clone()),
            }
            if !matches!(component, RawComponent::Object { .. }) {
                return Err(refuse(
                    &format!("{key}.component"),
                    "a tenant's component must be an object in its own account ({ object = \"BUCKET/NAME\" }), not a file".into(),
                ));
            }
            Ok(())
        };
        for (i, mut s) in included.subscribers.into_iter().enumerate() {
            owned("subscribers", i, &s.name, &mut s.tenant, &s.component)?;
            s.origin = Some(origin.clone());
            s.fragment = Some(fragment.key.clone());
            raw.subscribers.push(s);
        }
        for (i, mut e) in included.endpoints.into_iter().enumerate() {
            owned("endpoints", i, &e.name, &mut e.tenant, &e.component)?;
            e.origin = Some(origin.clone());
            e.fragment = Some(fragment.key.clone());
            raw.endpoints.push(e);
        }
        let (mut streams, mut buckets) = (included.streams, included.buckets);
        for st in &mut streams {
            st.tenant = fragment.key.tenant.clone();
        }
        for b in &mut buckets {
            b.tenant = fragment.key.tenant.clone();
        }
        add_streams_and_buckets(raw, streams, buckets, &origin);
        for mut p in included.publishers {
            p.origin = Some(origin.clone());
            raw.publishers.push(p);
        }
        for (i, mut s) in included.schedules.into_iter().enumerate() {
            // A tenant's schedules are its own, put into its account.
            if let Some(tenant) = &fragment.key.tenant {
                match &s.tenant {
                    Some(other) if other != tenant => {
                        return Err(refuse(
                            &format!("schedules[{i}] ({:?}).tenant", s.name),
                            format!("tenant {tenant:?}'s fragment may declare only its own schedules, not tenant {other:?}'s"),
                        ))
                    }
                    _ => s.tenant = Some(tenant.clone()),
                }
            }
            s.origin = Some(origin.clone());
            raw.schedules.push(s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_as_subjects_do() {
        let keys = |k: &str| KvKeys {
            bucket: "DEPLOY".into(),
            keys: k.into(),
        };
        assert!(keys(">").matches("a.b"));
        assert!(keys("platform.>").matches("platform.orders"));
        assert!(!keys("platform.>").matches("platform"));
        assert!(keys("platform.*").matches("platform.orders"));
        assert!(!keys("platform.*").matches("platform.orders.x"));
        assert!(keys("charge").matches("charge"));
        assert!(!keys("charge").matches("charges"));
    }
}
