//! Validation of what tenants bring: their identity (shared with `[nats]`),
//! their quotas and grants, and components pinned by SHA-256.

use super::*;
use crate::config::raw::{RawTenant, RawTls};

impl<'a, E: Fn(&str) -> Option<String>> Validator<'a, E> {
    /// How to authenticate and which TLS settings, from the keys under `key`.
    pub(super) fn identity(&mut self, key: &str, raw: Identity) -> (Auth, Option<TlsConfig>) {
        let mut auth = Vec::new();
        if let Some(p) = raw.credentials {
            auth.push(("credentials", Auth::Credentials(self.resolve(&p))));
        }
        if let Some(t) = raw.token {
            auth.push(("token", Auth::Token(t)));
        }
        match (raw.user, raw.password) {
            (Some(u), Some(p)) => auth.push(("user", Auth::UserPassword(u, p))),
            (Some(_), None) => self.problem(format!("{key}.user"), "needs password"),
            (None, Some(_)) => self.problem(format!("{key}.password"), "needs user"),
            (None, None) => {}
        }
        if let Some(seed) = raw.nkey {
            auth.push(("nkey", Auth::NKey(seed)));
        }
        if auth.len() > 1 {
            let names: Vec<&str> = auth.iter().map(|(n, _)| *n).collect();
            self.problem(
                key,
                format!(
                    "choose one way to authenticate, not {}",
                    names.join(" and ")
                ),
            );
        }
        let tls = raw.tls.map(|t| {
            let client = match (t.cert, t.key) {
                (Some(c), Some(k)) => Some((self.resolve(&c), self.resolve(&k))),
                (None, None) => None,
                _ => {
                    self.problem(format!("{key}.tls"), "cert and key go together");
                    None
                }
            };
            TlsConfig {
                ca: t.ca.map(|p| self.resolve(&p)),
                client,
                required: t.required,
            }
        });
        (auth.pop().map(|(_, a)| a).unwrap_or_default(), tls)
    }

    /// Checks that the file `component` has the SHA-256 `want`.
    pub(super) fn pinned(&mut self, key: &str, component: &Path, want: &str) {
        let want = want.trim().to_ascii_lowercase();
        if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
            self.problem(
                key,
                format!("{want:?} is not a SHA-256 (64 hexadecimal digits)"),
            );
            return;
        }
        match std::fs::read(component) {
            Ok(bytes) => {
                let have = crate::config::sha256_hex(&bytes);
                if have != want {
                    self.problem(
                        key,
                        format!(
                            "{} has SHA-256 {have}, the file pins {want}: refusing a component that is not the one pinned",
                            component.display()
                        ),
                    );
                }
            }
            Err(e) => self.problem(key, format!("cannot read {}: {e}", component.display())),
        }
    }

    pub(super) fn tenants(&mut self, raw: Vec<RawTenant>, base: &NatsConfig) -> Vec<TenantConfig> {
        self.unique(raw.iter().map(|t| t.name.clone()), "tenants", "name");
        raw.into_iter()
            .enumerate()
            .map(|(i, t)| {
                let key = format!("tenants[{i}] ({:?}){}", t.name, origin(&t.origin));
                if t.name.trim().is_empty() {
                    self.problem(format!("{key}.name"), "must not be empty");
                }
                let (auth, tls) = self.identity(
                    &format!("{key}.nats"),
                    Identity {
                        credentials: t.nats.credentials,
                        token: t.nats.token,
                        user: t.nats.user,
                        password: t.nats.password,
                        nkey: t.nats.nkey,
                        tls: t.nats.tls,
                    },
                );
                let servers = t.nats.servers.unwrap_or_else(|| base.servers.clone());
                if servers.is_empty() {
                    self.problem(
                        format!("{key}.nats.servers"),
                        "must name at least one server",
                    );
                }
                if t.quotas.concurrency == Some(0) {
                    self.problem(format!("{key}.quotas.concurrency"), "must be 1 or more");
                }
                if t.quotas.http_concurrency == Some(0) {
                    self.problem(
                        format!("{key}.quotas.http_concurrency"),
                        "must be 1 or more",
                    );
                }
                if t.quotas.handlers == Some(0) {
                    self.problem(format!("{key}.quotas.handlers"), "must be 1 or more");
                }
                if t.quotas.publishes_per_message == Some(0) {
                    self.problem(
                        format!("{key}.quotas.publishes_per_message"),
                        "must be 1 or more",
                    );
                }
                TenantConfig {
                    name: t.name,
                    nats: NatsConfig {
                        servers,
                        auth,
                        tls,
                        ..base.clone()
                    },
                    quotas: Quotas {
                        concurrency: Some(
                            t.quotas.concurrency.unwrap_or(defaults::TENANT_CONCURRENCY),
                        ),
                        publishes_per_message: t
                            .quotas
                            .publishes_per_message
                            .unwrap_or(defaults::PUBLISHES_PER_MESSAGE),
                        cpu: Some(t.quotas.cpu.map_or(defaults::TENANT_CPU, |c| c.0)),
                        memory: Some(t.quotas.memory.map_or(defaults::TENANT_MEMORY, |m| m.0)),
                        publish_rate: Some(
                            t.quotas
                                .publish_rate
                                .map_or(defaults::TENANT_PUBLISH_RATE, |r| r.0),
                        ),
                        publish_bytes: Some(
                            t.quotas
                                .publish_bytes
                                .map_or(defaults::TENANT_PUBLISH_BYTES, |r| r.0),
                        ),
                        http_rate: Some(
                            t.quotas
                                .http_rate
                                .map_or(defaults::TENANT_HTTP_RATE, |r| r.0),
                        ),
                        http_concurrency: Some(
                            t.quotas
                                .http_concurrency
                                .unwrap_or(defaults::TENANT_HTTP_CONCURRENCY),
                        ),
                        component_size: Some(
                            t.quotas
                                .component_size
                                .map_or(defaults::TENANT_COMPONENT_SIZE, |b| b.0),
                        ),
                        handlers: Some(t.quotas.handlers.unwrap_or(defaults::TENANT_HANDLERS)),
                        compile_time: Some(
                            t.quotas
                                .compile_time
                                .map_or(defaults::TENANT_COMPILE_TIME, |d| d.0),
                        ),
                    },
                    deploy: t.deploy.map(|d| self.kv_keys(&format!("{key}.deploy"), d)),
                    grant_publish: t.grants.publish,
                    grant_kv: t.grants.kv,
                    grant_http: t
                        .grants
                        .http
                        .map(|o| self.origins(&format!("{key}.grants.http"), o)),
                }
            })
            .collect()
    }
}

/// The identity keys of `[nats]` or a tenant's `nats`.
pub(super) struct Identity {
    pub(super) credentials: Option<PathBuf>,
    pub(super) token: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) nkey: Option<String>,
    pub(super) tls: Option<RawTls>,
}
