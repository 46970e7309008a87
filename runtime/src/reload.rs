//! Hot reload: read service.toml and the components again and move the
//! running service to them, all or nothing. Everything that can fail (the
//! file, a component, a stream, a durable consumer) is done before
//! anything running is touched; a refused reload leaves the previous
//! configuration running, logged and counted. Subscribers whose
//! configuration, component bytes, tenant or publish routes changed are
//! replaced (the new version pulls once the old one's in-flight messages
//! are settled), removed ones are retired, new ones start; a tenant opens
//! its connection with its first subscriber and drains it after its last.
//! `[service]` and `[nats]` need a restart.

use crate::config::{Config, ConfigError, SubscriberConfig};
use crate::nats::publish::PublishRoutes;
use crate::nats::setup::{self, SetupError};
use crate::roster::{Retired, Roster, TenantEntry};
use crate::wasm::component::ComponentError;
use crate::wasm::WasmRuntime;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Why a reload was refused. The previous configuration keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The change cannot be applied to a running service.
    #[error("{0}; restart the service to apply it")]
    NeedsRestart(String),
    /// A component cannot serve as a handler.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// Streams or consumers do not match the file, or the server refused them.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The service is not running (any more).
    #[error("the service is not running")]
    NotRunning,
}

/// What a reload changed, by subscriber and tenant name.
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
        Ok(())
    }
}

/// What a replica answers on `<service>.reload`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The service name.
    pub service: String,
    /// The replica's `$SRV` id.
    pub id: String,
    /// True when the reload was applied.
    pub applied: bool,
    /// What it changed, when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why it was refused, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long `natsapp-wasm reload` waits for the first answer: a reload
/// compiles changed components before it answers.
pub const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long it keeps listening for more replicas after an answer.
pub const MORE_ANSWERS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks every running replica of `config`'s service, over its `[nats]`
/// connection, to reload, and gathers their answers.
pub async fn ask_running(config: &Config) -> Result<Vec<Answer>, crate::Error> {
    use futures::StreamExt;
    let (fatal, _lost) = mpsc::unbounded_channel();
    let name = format!("{} reload", config.service.name);
    let client = crate::nats::connect::connect(&name, &config.nats, fatal).await?;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| crate::Error::Engine(format!("cannot subscribe to {inbox}: {e}")))?;
    let subject = format!("{}.reload", config.service.name);
    client
        .publish_with_reply(subject.clone(), inbox, Default::default())
        .await
        .map_err(|e| crate::Error::Engine(format!("cannot publish to {subject}: {e}")))?;
    let mut answers = Vec::new();
    let mut wait = FIRST_ANSWER_WAIT;
    while let Ok(Some(reply)) = tokio::time::timeout(wait, replies.next()).await {
        match serde_json::from_slice::<Answer>(&reply.payload) {
            Ok(a) => answers.push(a),
            Err(e) => tracing::warn!("an answer on {subject} is not a reload answer: {e}"),
        }
        wait = MORE_ANSWERS_WAIT;
    }
    Ok(answers)
}

/// A reload asked for, and where its outcome goes.
pub(crate) struct Request {
    answer: oneshot::Sender<Result<Summary, Arc<ReloadError>>>,
}

impl Request {
    pub(crate) fn answer(self, outcome: Result<Summary, Arc<ReloadError>>) {
        let _ = self.answer.send(outcome);
    }
}

/// Asks a running service to reload; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<Request>,
}

impl Reloader {
    /// A reloader and the queue its requests arrive on.
    pub(crate) fn channel() -> (Reloader, mpsc::Receiver<Request>) {
        let (requests, queue) = mpsc::channel(8);
        (Reloader { requests }, queue)
    }

    /// Reloads the service's file and components; resolves when the reload
    /// is applied (subscribers replaced or removed may still be settling
    /// their last messages) or refused.
    pub async fn reload(&self) -> Result<Summary, Arc<ReloadError>> {
        let (answer, outcome) = oneshot::channel();
        self.requests
            .send(Request { answer })
            .await
            .map_err(|_| Arc::new(ReloadError::NotRunning))?;
        outcome
            .await
            .map_err(|_| Arc::new(ReloadError::NotRunning))?
    }
}

/// The SHA-256 of a component file, in hex: a reload replaces a subscriber
/// whose component bytes changed.
fn digest_of(path: &Path) -> std::io::Result<String> {
    Ok(crate::config::sha256_hex(&std::fs::read(path)?))
}

/// What a running subscriber is, as far as a reload compares it.
pub(crate) struct Current<'a> {
    pub(crate) config: &'a SubscriberConfig,
    pub(crate) digest: &'a str,
    pub(crate) runs: bool,
}

/// What a reload does, decided from the running state and the new file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) add: BTreeSet<String>,
    pub(crate) replace: BTreeSet<String>,
    pub(crate) remove: BTreeSet<String>,
    pub(crate) keep: BTreeSet<String>,
    pub(crate) open_tenants: BTreeSet<String>,
    pub(crate) close_tenants: BTreeSet<String>,
}

/// Decides what moving from `old` to `new` takes. `running` is every
/// subscriber of `old`; `connected_tenants` the tenants whose connection
/// is up; `digests` the new file's components' digests by subscriber.
pub(crate) fn plan(
    old: &Config,
    running: &HashMap<String, Current<'_>>,
    connected_tenants: &BTreeSet<String>,
    new: &Config,
    digests: &HashMap<String, String>,
) -> Result<Plan, ReloadError> {
    if old.service != new.service {
        return Err(ReloadError::NeedsRestart(format!(
            "{}: [service] changed",
            new.path.display()
        )));
    }
    if old.nats != new.nats {
        return Err(ReloadError::NeedsRestart(format!(
            "{}: [nats] changed",
            new.path.display()
        )));
    }
    let mut plan = Plan::default();
    for t in &new.tenants {
        if !new.has_subscribers(&t.name) {
            continue;
        }
        let same = old.tenants.iter().any(|o| o == t) && connected_tenants.contains(&t.name);
        if !same {
            plan.open_tenants.insert(t.name.clone());
        }
    }
    for name in connected_tenants {
        let kept = new.tenants.iter().any(|t| &t.name == name)
            && !plan.open_tenants.contains(name)
            && new.has_subscribers(name);
        if !kept {
            plan.close_tenants.insert(name.clone());
        }
    }
    let routes_changed = old.streams != new.streams || old.publishers != new.publishers;
    for s in &new.subscribers {
        let Some(current) = running.get(&s.name) else {
            plan.add.insert(s.name.clone());
            continue;
        };
        let tenant_reopened = s
            .tenant
            .as_ref()
            .is_some_and(|t| plan.open_tenants.contains(t));
        // A subscriber granted a bucket whose [[buckets]] entry changed is
        // set up again, so the bucket is verified (or declared) anew.
        let buckets_changed = s.kv.keys().any(|b| {
            old.buckets.iter().find(|x| &x.name == b) != new.buckets.iter().find(|x| &x.name == b)
        });
        let same = current.config == s
            && digests.get(&s.name).map(String::as_str) == Some(current.digest)
            && current.runs
            && !routes_changed
            && !buckets_changed
            && !tenant_reopened;
        if same {
            plan.keep.insert(s.name.clone());
        } else {
            plan.replace.insert(s.name.clone());
        }
    }
    for name in running.keys() {
        if !new.subscribers.iter().any(|s| &s.name == name) {
            plan.remove.insert(name.clone());
        }
    }
    Ok(plan)
}

/// Reloads `roster`'s file and components and applies them; counted and logged.
pub(crate) async fn apply(
    roster: &mut Roster,
    wasm: &Arc<WasmRuntime>,
) -> Result<Summary, Arc<ReloadError>> {
    let path = roster.config.path.clone();
    tracing::info!(file = %path.display(), "reloading");
    match try_apply(roster, wasm).await {
        Ok(summary) => {
            roster.stats.reloads.applied.fetch_add(1, Relaxed);
            tracing::info!(file = %path.display(), "reload applied: {summary}");
            Ok(summary)
        }
        Err(e) => {
            roster.stats.reloads.refused.fetch_add(1, Relaxed);
            tracing::error!(file = %path.display(), "reload refused, the previous configuration keeps running: {}", crate::telemetry::ErrorChain(&e));
            Err(Arc::new(e))
        }
    }
}

async fn try_apply(roster: &mut Roster, wasm: &Arc<WasmRuntime>) -> Result<Summary, ReloadError> {
    let new = Config::load(&roster.config.path)?;
    if let Some(why) = wasm.cannot_run(&new) {
        return Err(ReloadError::NeedsRestart(why));
    }
    let mut digests = HashMap::new();
    for s in &new.subscribers {
        let digest = digest_of(&s.component).map_err(|e| ComponentError {
            subscriber: s.name.clone(),
            path: s.component.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        digests.insert(s.name.clone(), digest);
    }
    let running: HashMap<String, Current<'_>> = roster
        .subscribers
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                Current {
                    config: &e.config,
                    digest: &e.digest,
                    runs: e.runs(),
                },
            )
        })
        .collect();
    let connected: BTreeSet<String> = roster
        .tenants
        .iter()
        .filter(|(_, t)| t.connection.is_ok())
        .map(|(n, _)| n.clone())
        .collect();
    let plan = plan(&roster.config, &running, &connected, &new, &digests)?;
    drop(running);

    // Everything that can fail, before anything running changes.
    let mut compiled = HashMap::new();
    for name in plan.add.iter().chain(&plan.replace) {
        let s = new.subscriber(name).expect("planned from the new file");
        let (wasm, path, name) = (wasm.clone(), s.component.clone(), s.name.clone());
        let loaded = tokio::task::spawn_blocking(move || wasm.load(&path, &name))
            .await
            .map_err(|e| {
                ReloadError::NeedsRestart(format!("compiling a component failed: {e}"))
            })??;
        compiled.insert(s.name.clone(), loaded);
    }
    let js = roster.own.jetstream.clone();
    setup::ensure_streams(&js, &new).await?;
    setup::check_publishers(&js, &new).await?;
    setup::warn_duplicate_windows(&js, &new).await;
    let mut opened: HashMap<String, TenantEntry> = HashMap::new();
    for name in &plan.open_tenants {
        let t = new
            .tenants
            .iter()
            .find(|t| &t.name == name)
            .expect("planned from the new file");
        opened.insert(name.clone(), roster.open_tenant(&new, t).await);
    }
    let mut set_ups = HashMap::new();
    for name in plan.add.iter().chain(&plan.replace) {
        let s = new.subscriber(name).expect("planned from the new file");
        let conn = match &s.tenant {
            None => Ok(&roster.own),
            Some(t) => match opened.get(t).or_else(|| roster.tenants.get(t)) {
                Some(t) => t.connection.as_ref().map_err(Clone::clone),
                None => Err(format!("tenant {t:?} is not connected")),
            },
        };
        let set_up = match conn {
            Err(reason) => Err(reason),
            Ok(conn) => match setup::ensure_subscriber(&conn.jetstream, &new, s).await {
                Ok(set_up) => Ok(set_up),
                Err(e) if s.tenant.is_none() => {
                    for (_, t) in opened.drain() {
                        roster.close_tenant(t, Vec::new(), false);
                    }
                    return Err(e.into());
                }
                Err(e) => Err(crate::telemetry::ErrorChain(&e).to_string()),
            },
        };
        set_ups.insert(name.clone(), set_up);
    }

    // Apply: nothing below fails.
    let summary = Summary {
        added: plan.add.iter().cloned().collect(),
        replaced: plan.replace.iter().cloned().collect(),
        removed: plan.remove.iter().cloned().collect(),
        unchanged: plan.keep.iter().cloned().collect(),
        tenants_opened: plan.open_tenants.iter().cloned().collect(),
        tenants_closed: plan.close_tenants.iter().cloned().collect(),
    };
    roster.routes = Arc::new(PublishRoutes::new(&new));
    roster.set_streams(&new.streams);
    let mut closing: HashMap<String, TenantEntry> = HashMap::new();
    for name in &plan.close_tenants {
        if let Some(t) = roster.tenants.remove(name) {
            closing.insert(name.clone(), t);
        }
    }
    for (name, t) in opened {
        roster.register_tenant(&t);
        roster.tenants.insert(name, t);
    }
    let mut taken = HashMap::new();
    for name in &plan.remove {
        taken.insert(name.clone(), roster.subscribers.remove(name));
    }
    for name in &plan.replace {
        taken.insert(name.clone(), roster.subscribers.remove(name));
    }
    let mut closing_waits: HashMap<String, Vec<Retired>> = HashMap::new();
    let mut predecessors = HashMap::new();
    for (name, entry) in taken {
        let Some(entry) = entry else { continue };
        let tenant = entry.config.tenant.clone();
        let previous = entry.subscriber().cloned();
        let retirement = roster.retire(entry, plan.remove.contains(&name));
        if let Some(t) = tenant.filter(|t| closing.contains_key(t)) {
            closing_waits
                .entry(t)
                .or_default()
                .push(retirement.released);
        }
        predecessors.insert(name, (previous, retirement.settled));
    }
    for name in plan.add.iter().chain(&plan.replace) {
        let s = new.subscriber(name).expect("planned from the new file");
        let loaded = compiled.remove(name).expect("compiled above");
        let entry = match set_ups.remove(name).expect("set up above") {
            Ok(set_up) => {
                let conn = roster
                    .connection_of(s)
                    .expect("the connection a consumer was set up on")
                    .clone();
                roster.prepare(s, loaded, &conn, set_up, predecessors.remove(name))
            }
            Err(reason) => roster.not_running(s, loaded.digest, &reason),
        };
        roster.subscribers.insert(name.clone(), entry);
    }
    for (name, t) in closing {
        let forget = !plan.open_tenants.contains(&name);
        roster.close_tenant(t, closing_waits.remove(&name).unwrap_or_default(), forget);
    }
    crate::telemetry::describe_service(&new);
    roster.config = new;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The plan from `BASE` (both running, acme connected, digest "d") to `new`.
    fn plan_to(new: &str, digests: &[(&str, &str)]) -> Result<Plan, ReloadError> {
        plan_between(BASE, new, digests)
    }

    /// The plan from `old` (all running, acme connected, digest "d") to `new`.
    fn plan_between(old: &str, new: &str, digests: &[(&str, &str)]) -> Result<Plan, ReloadError> {
        let old = parse(old);
        let running = old
            .subscribers
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Current {
                        config: s,
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
        plan(&old, &running, &connected, &new, &all)
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
