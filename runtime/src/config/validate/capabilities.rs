//! Validation of what subscribers may reach beyond NATS: key-value
//! buckets (`[[buckets]]`, `kv`) and HTTP origins (`http`), each within its
//! tenant's `grants`.

use super::*;

impl<'a, E: Fn(&str) -> Option<String>> Validator<'a, E> {
    pub(super) fn buckets(&mut self, raw: Vec<raw::RawBucket>) -> Vec<BucketConfig> {
        self.unique(
            raw.iter().map(|b| super::owned(&b.tenant, &b.name)),
            "buckets",
            "name",
        );
        raw.into_iter()
            .enumerate()
            .map(|(i, b)| {
                let key = format!("buckets[{i}] ({:?}){}", b.name, super::origin(&b.origin));
                if let Err(e) = check_bucket_name(&b.name) {
                    self.problem(format!("{key}.name"), e);
                }
                let history = b.history.unwrap_or(defaults::BUCKET_HISTORY);
                if !(1..=64).contains(&history) {
                    self.problem(format!("{key}.history"), "must be between 1 and 64");
                }
                if b.replicas == Some(0) {
                    self.problem(format!("{key}.replicas"), "must be 1 or more");
                }
                if b.max_value_size
                    .is_some_and(|m| m.0 == 0 || m.0 > i32::MAX as u64)
                {
                    self.problem(
                        format!("{key}.max_value_size"),
                        "must be between 1B and 2GiB",
                    );
                }
                if b.max_bytes
                    .is_some_and(|m| m.0 == 0 || m.0 > i64::MAX as u64)
                {
                    self.problem(format!("{key}.max_bytes"), "must be 1B or more");
                }
                BucketConfig {
                    name: b.name,
                    declare: b.declare.unwrap_or(true),
                    history,
                    max_age: b.max_age.map(|d| d.0),
                    max_bytes: b.max_bytes.map(|m| m.0),
                    max_value_size: b.max_value_size.map(|m| m.0),
                    storage: b.storage,
                    replicas: b.replicas,
                    tenant: b.tenant,
                }
            })
            .collect()
    }

    /// Parses the `http` entries under `key`.
    pub(super) fn origins(&mut self, key: &str, raw: Vec<raw::RawOrigin>) -> Vec<Origin> {
        raw.into_iter()
            .filter_map(|o| {
                let parsed = match o {
                    raw::RawOrigin::Plain(text) => Origin::parse(&text, false),
                    raw::RawOrigin::Table { origin, internal } => Origin::parse(&origin, internal),
                };
                parsed.map_err(|e| self.problem(key, e)).ok()
            })
            .collect()
    }

    /// Checks a subscriber's `http` origins lie within its tenant's `grants.http`.
    pub(super) fn http_grants(
        &mut self,
        key: &str,
        http: &[Origin],
        tenant: Option<&TenantConfig>,
    ) {
        let Some((t, grants)) = tenant.and_then(|t| t.grant_http.as_ref().map(|g| (t, g))) else {
            return;
        };
        for o in http {
            if !grants.iter().any(|g| g.covers(o)) {
                let granted: Vec<String> = grants.iter().map(Origin::to_string).collect();
                self.problem(
                    format!("{key}.http"),
                    format!(
                        "{o} is outside tenant {:?}'s grants.http ({})",
                        t.name,
                        if granted.is_empty() {
                            "none".to_string()
                        } else {
                            granted.join(", ")
                        }
                    ),
                );
            }
        }
    }

    /// Checks the buckets tenants' fragments declare — (index, name,
    /// tenant, origin) — lie within their `grants.kv`.
    pub(super) fn tenant_buckets(
        &mut self,
        buckets: &[(usize, String, String, Option<PathBuf>)],
        tenants: &[TenantConfig],
    ) {
        for (i, name, tenant, from) in buckets {
            let Some(t) = tenants.iter().find(|x| &x.name == tenant) else {
                continue;
            };
            if t.grant_kv.as_ref().is_some_and(|g| !g.contains_key(name)) {
                self.problem(
                    format!("buckets[{i}] ({name:?}){}", super::origin(from)),
                    format!("bucket {name:?} is outside tenant {tenant:?}'s grants.kv"),
                );
            }
        }
    }

    /// Checks a subscriber's `kv` grants: bucket names, and within its
    /// tenant's `grants.kv`.
    pub(super) fn kv_grants(
        &mut self,
        key: &str,
        kv: &BTreeMap<String, KvAccess>,
        tenant: Option<&TenantConfig>,
    ) {
        for (bucket, access) in kv {
            if let Err(e) = check_bucket_name(bucket) {
                self.problem(format!("{key}.kv"), e);
                continue;
            }
            let Some((t, grants)) = tenant.and_then(|t| t.grant_kv.as_ref().map(|g| (t, g))) else {
                continue;
            };
            match grants.get(bucket) {
                Some(most) if access <= most => {}
                Some(most) => self.problem(
                    format!("{key}.kv"),
                    format!(
                        "bucket {bucket:?} is granted {:?} but tenant {:?}'s grants.kv allows only {:?}",
                        access.as_str(),
                        t.name,
                        most.as_str()
                    ),
                ),
                None => self.problem(
                    format!("{key}.kv"),
                    format!(
                        "bucket {bucket:?} is outside tenant {:?}'s grants.kv ({})",
                        t.name,
                        if grants.is_empty() {
                            "none".to_string()
                        } else {
                            grants.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ),
            }
        }
    }
}

/// A JetStream key-value bucket name: letters, digits, `-` and `_`.
pub(super) fn check_bucket_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{name:?} is not a bucket name: use letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}
