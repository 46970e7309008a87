//! Validating where things come from: a subscriber's component (a file, or
//! an object in an object store) and a source of fragments in key-value.

use super::super::raw;
use super::super::{ComponentSource, KvKeys};
use super::Validator;

impl<E: Fn(&str) -> Option<String>> Validator<'_, E> {
    /// Where a subscriber's component comes from; a file must be readable
    /// (and have the bytes pinned), an object's name and pin well formed.
    pub(super) fn component(&mut self, key: &str, raw: &raw::RawComponent) -> ComponentSource {
        let (path, pin) = match raw {
            raw::RawComponent::Path(p) => (p, None),
            raw::RawComponent::Pinned { path, sha256 } => (path, Some(sha256)),
            raw::RawComponent::Object { object, sha256 } => {
                let (bucket, name) = object.split_once('/').unwrap_or((object, ""));
                let valid_bucket = !bucket.is_empty()
                    && bucket
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid_bucket || name.is_empty() {
                    self.problem(
                        format!("{key}.component.object"),
                        format!("{object:?} is not BUCKET/NAME (a bucket of letters, digits, '-' and '_', then the component's name)"),
                    );
                }
                let sha256 = sha256.as_deref().map(|d| d.trim().to_ascii_lowercase());
                if let Some(d) = &sha256 {
                    if d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                        self.problem(
                            format!("{key}.component.sha256"),
                            format!("{d:?} is not a SHA-256 (64 hexadecimal digits)"),
                        );
                    }
                }
                return ComponentSource::Object {
                    bucket: bucket.to_string(),
                    name: name.to_string(),
                    sha256,
                };
            }
        };
        let component = self.resolve(path);
        match std::fs::metadata(&component) {
            Ok(m) if m.is_file() => {
                if let Some(want) = pin {
                    self.pinned(&format!("{key}.component.sha256"), &component, want);
                }
            }
            Ok(_) => self.problem(
                format!("{key}.component"),
                format!("{} is not a file", component.display()),
            ),
            Err(e) => self.problem(
                format!("{key}.component"),
                format!("cannot read {}: {e}", component.display()),
            ),
        }
        ComponentSource::File(component)
    }

    /// `{ kv, keys }`: a bucket name and a key pattern.
    pub(super) fn kv_keys(&mut self, key: &str, raw: raw::RawKvKeys) -> KvKeys {
        let valid_bucket = !raw.kv.is_empty()
            && raw
                .kv
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_bucket {
            self.problem(
                format!("{key}.kv"),
                format!(
                    "{:?} is not a bucket name (letters, digits, '-' and '_')",
                    raw.kv
                ),
            );
        }
        let valid_keys =
            !raw.keys.is_empty()
                && raw.keys.split('.').enumerate().all(|(i, t)| {
                    !t.is_empty() && (t != ">" || i == raw.keys.split('.').count() - 1)
                });
        if !valid_keys {
            self.problem(
                format!("{key}.keys"),
                format!("{:?} is not a key or a pattern of keys (tokens separated by '.', '*' for one, '>' last for the rest)", raw.keys),
            );
        }
        KvKeys {
            bucket: raw.kv,
            keys: raw.keys,
        }
    }
}
