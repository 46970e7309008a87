//! What moving the running service to a new file takes: which subscribers
//! are added, replaced, removed or kept, and which tenants open and close.
//! Start-up is the same move from nothing. Decided without touching
//! anything; `prepare` and `commit` carry it out.

use crate::config::{Config, EndpointConfig, StreamConfig, SubscriberConfig};
use crate::wasm::PoolTooSmall;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

/// What a running subscriber or endpoint is, as far as a reload compares it.
pub(crate) struct Current<'a> {
    /// What its guest runs with (an endpoint's `handler`).
    pub(crate) config: &'a SubscriberConfig,
    /// The endpoint, for an endpoint.
    pub(crate) endpoint: Option<&'a EndpointConfig>,
    pub(crate) digest: &'a str,
    pub(crate) runs: bool,
}

/// What moving the running service to a new file takes, decided from the
/// running state and the new file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) add: BTreeSet<String>,
    pub(crate) replace: BTreeSet<String>,
    pub(crate) remove: BTreeSet<String>,
    pub(crate) keep: BTreeSet<String>,
    pub(crate) open_tenants: BTreeSet<String>,
    pub(crate) close_tenants: BTreeSet<String>,
}

/// A change a running service cannot take: it needs a restart.
#[derive(Debug, thiserror::Error)]
pub enum NeedsRestart {
    /// `[service]` changed.
    #[error("{}: [service] changed; restart the service to apply it", file.display())]
    Service {
        /// The file.
        file: PathBuf,
    },
    /// `[nats]` changed.
    #[error("{}: [nats] changed; restart the service to apply it", file.display())]
    Nats {
        /// The file.
        file: PathBuf,
    },
    /// The new file needs more of the WebAssembly engine than it was started with.
    #[error("{}: the WebAssembly engine was started too small for it; restart the service to apply it", file.display())]
    Engine {
        /// The file.
        file: PathBuf,
        /// What it needs.
        #[source]
        source: PoolTooSmall,
    },
}

impl Change {
    /// What moving from `old` (`None`: nothing runs yet, the service is
    /// starting) to `new` takes. `running` is every subscriber of `old`;
    /// `connected_tenants` the tenants whose connection is up; `digests`
    /// the new file's components' digests by subscriber.
    pub(crate) fn between(
        old: Option<&Config>,
        running: &HashMap<String, Current<'_>>,
        connected_tenants: &BTreeSet<String>,
        new: &Config,
        digests: &HashMap<String, String>,
    ) -> Result<Change, NeedsRestart> {
        if let Some(old) = old {
            if old.service != new.service {
                return Err(NeedsRestart::Service {
                    file: new.path.clone(),
                });
            }
            if old.nats != new.nats {
                return Err(NeedsRestart::Nats {
                    file: new.path.clone(),
                });
            }
        }
        let mut change = Change::default();
        for t in &new.tenants {
            if !new.needs_connection(&t.name) {
                continue;
            }
            let same = old.is_some_and(|old| old.tenants.iter().any(|o| o == t))
                && connected_tenants.contains(&t.name);
            if !same {
                change.open_tenants.insert(t.name.clone());
            }
        }
        for name in connected_tenants {
            let kept = new.tenants.iter().any(|t| &t.name == name)
                && !change.open_tenants.contains(name)
                && new.needs_connection(name);
            if !kept {
                change.close_tenants.insert(name.clone());
            }
        }
        // The streams a subscriber of `tenant` publishes through.
        let streams_of = |c: &Config, tenant: &Option<String>| -> Vec<StreamConfig> {
            c.streams
                .iter()
                .filter(|st| st.seen_by(tenant))
                .cloned()
                .collect()
        };
        let routes_changed = |tenant: &Option<String>| {
            old.is_some_and(|old| {
                old.publishers != new.publishers
                    || streams_of(old, tenant) != streams_of(new, tenant)
            })
        };
        let handlers = (new.subscribers.iter().map(|s| (s, None)))
            .chain(new.endpoints.iter().map(|e| (&e.handler, Some(e))));
        for (s, endpoint) in handlers {
            let Some(current) = running.get(&s.name) else {
                change.add.insert(s.name.clone());
                continue;
            };
            let tenant_reopened = s
                .tenant
                .as_ref()
                .is_some_and(|t| change.open_tenants.contains(t));
            // A subscriber granted a bucket whose [[buckets]] entry changed is
            // set up again, so the bucket is verified (or declared) anew.
            let buckets_changed = s.kv.keys().any(|b| {
                let bucket = |c: &Config| c.bucket_for(b, &s.tenant).cloned();
                old.and_then(bucket) != bucket(new)
            });
            let same = current.config == s
                && current.endpoint == endpoint
                && digests.get(&s.name).map(String::as_str) == Some(current.digest)
                && current.runs
                && !routes_changed(&s.tenant)
                && !buckets_changed
                && !tenant_reopened;
            if same {
                change.keep.insert(s.name.clone());
            } else {
                change.replace.insert(s.name.clone());
            }
        }
        for name in running.keys() {
            if new.subscriber(name).is_none() && new.endpoint(name).is_none() {
                change.remove.insert(name.clone());
            }
        }
        Ok(change)
    }
}

/// What a change did, by subscriber, endpoint and tenant name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Subscribers that started.
    pub added: Vec<String>,
    /// Subscribers replaced by a new version (configuration or component).
    pub replaced: Vec<String>,
    /// Subscribers retired.
    pub removed: Vec<String>,
    /// Subscribers left running as they were.
    pub unchanged: Vec<String>,
    /// Tenants whose connection opened.
    pub tenants_opened: Vec<String>,
    /// Tenants whose connection is drained and closed.
    pub tenants_closed: Vec<String>,
    /// Schedules put, new or changed, as `<name> in <stream>`.
    #[serde(default)]
    pub schedules_put: Vec<String>,
    /// Schedules removed from a stream, as `<name> in <stream>`.
    #[serde(default)]
    pub schedules_removed: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "added {}; replaced {}; removed {}; unchanged {}",
            list(&self.added),
            list(&self.replaced),
            list(&self.removed),
            list(&self.unchanged)
        )?;
        if !self.tenants_opened.is_empty() || !self.tenants_closed.is_empty() {
            write!(
                f,
                "; tenants opened {}, closed {}",
                list(&self.tenants_opened),
                list(&self.tenants_closed)
            )?;
        }
        if !self.schedules_put.is_empty() || !self.schedules_removed.is_empty() {
            write!(
                f,
                "; schedules put {}, removed {}",
                list(&self.schedules_put),
                list(&self.schedules_removed)
            )?;
        }
        Ok(())
    }
}

impl Summary {
    /// The names `change` moves.
    pub(crate) fn of(change: &Change) -> Summary {
        let names = |set: &BTreeSet<String>| set.iter().cloned().collect();
        Summary {
            added: names(&change.add),
            replaced: names(&change.replace),
            removed: names(&change.remove),
            unchanged: names(&change.keep),
            tenants_opened: names(&change.open_tenants),
            tenants_closed: names(&change.close_tenants),
            ..Summary::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[service]
name = "svc"

[[streams]]
name = "ORDERS"
subjects = ["order.>"]

[[tenants]]
name = "acme"

[[subscribers]]
name = "a"
component = "handler.wasm"
subject = "order.a"
stream = "ORDERS"
durable = "a"

[[subscribers]]
name = "b"
tenant = "acme"
component = "handler.wasm"
subject = "order.b"
stream = "ORDERS"
durable = "b"
"#;

    fn parse(text: &str) -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/service.toml");
        Config::parse(&path, text, |_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The change from `BASE` (both running, acme connected, digest "d") to `new`.
    fn plan_to(new: &str, digests: &[(&str, &str)]) -> Result<Change, NeedsRestart> {
        plan_between(BASE, new, digests)
    }

    /// The change from `old` (all running, acme connected, digest "d") to `new`.
    fn plan_between(
        old: &str,
        new: &str,
        digests: &[(&str, &str)],
    ) -> Result<Change, NeedsRestart> {
        let old = parse(old);
        let running = old
            .subscribers
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Current {
                        config: s,
                        endpoint: None,
                        digest: "d",
                        runs: true,
                    },
                )
            })
            .collect();
        let connected = BTreeSet::from(["acme".to_string()]);
        let new = parse(new);
        let mut all: HashMap<String, String> = new
            .subscribers
            .iter()
            .map(|s| (s.name.clone(), "d".to_string()))
            .collect();
        for (name, d) in digests {
            all.insert(name.to_string(), d.to_string());
        }
        Change::between(Some(&old), &running, &connected, &new, &all)
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let p = plan_to(BASE, &[]).unwrap();
        assert_eq!(names(&p.keep), ["a", "b"]);
        assert!(p.add.is_empty() && p.replace.is_empty() && p.remove.is_empty());
        assert!(p.open_tenants.is_empty() && p.close_tenants.is_empty());
    }

    #[test]
    fn new_component_bytes_or_settings_replace_only_that_subscriber() {
        let p = plan_to(BASE, &[("a", "other")]).unwrap();
        assert_eq!((names(&p.replace), names(&p.keep)), (vec!["a"], vec!["b"]));
        let p = plan_to(
            &BASE.replace("durable = \"b\"", "durable = \"b\"\nconcurrency = 4"),
            &[],
        )
        .unwrap();
        assert_eq!((names(&p.replace), names(&p.keep)), (vec!["b"], vec!["a"]));
    }

    #[test]
    fn a_changed_bucket_replaces_the_subscribers_granted_it() {
        let granted = BASE.replacen(
            "durable = \"a\"",
            "durable = \"a\"\nkv = { STATE = \"rw\" }",
            1,
        ) + "\n[[buckets]]\nname = \"STATE\"\n";
        let changed = granted.replace("name = \"STATE\"\n", "name = \"STATE\"\nhistory = 5\n");
        let p = plan_between(&granted, &changed, &[]).unwrap();
        assert_eq!((names(&p.replace), names(&p.keep)), (vec!["a"], vec!["b"]));
        let p = plan_between(&granted, &granted, &[]).unwrap();
        assert_eq!(names(&p.keep), ["a", "b"]);
    }

    #[test]
    fn a_changed_stream_replaces_every_subscriber() {
        let p = plan_to(
            &BASE.replace("[\"order.>\"]", "[\"order.>\", \"refund.>\"]"),
            &[],
        )
        .unwrap();
        assert_eq!(names(&p.replace), ["a", "b"]);
    }

    #[test]
    fn a_tenant_closes_with_its_last_subscriber_and_reopens_when_it_changes() {
        let without_b = &BASE[..BASE.rfind("[[subscribers]]").unwrap()];
        let p = plan_to(without_b, &[]).unwrap();
        assert_eq!(names(&p.remove), ["b"]);
        assert_eq!(names(&p.close_tenants), ["acme"]);
        let p = plan_to(
            &BASE.replace(
                "name = \"acme\"",
                "name = \"acme\"\nquotas = { concurrency = 2 }",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(names(&p.open_tenants), ["acme"]);
        assert_eq!(names(&p.close_tenants), ["acme"]);
        assert_eq!((names(&p.replace), names(&p.keep)), (vec!["b"], vec!["a"]));
    }

    #[test]
    fn starting_adds_everything() {
        let new = parse(BASE);
        let digests = new
            .subscribers
            .iter()
            .map(|s| (s.name.clone(), "d".to_string()))
            .collect();
        let p = Change::between(None, &HashMap::new(), &BTreeSet::new(), &new, &digests).unwrap();
        assert_eq!(names(&p.add), ["a", "b"]);
        assert_eq!(names(&p.open_tenants), ["acme"]);
        assert!(p.replace.is_empty() && p.remove.is_empty() && p.keep.is_empty());
    }

    #[test]
    fn service_and_nats_changes_need_a_restart() {
        let e = plan_to(&BASE.replace("name = \"svc\"", "name = \"svc2\""), &[]).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("[service] changed; restart the service to apply it"),
            "{e}"
        );
        let e = plan_to(
            &format!("{BASE}\n[nats]\nservers = [\"nats://elsewhere:4222\"]\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("[nats] changed"), "{e}");
    }
}
