//! Deploying over NATS: service fragments in key-value keys — the
//! platform's `include = [{ kv, keys }]` and each tenant's `deploy`, read
//! with the tenant's own identity in its account — that every replica
//! reads at start and watches after (`watch`), compiles the components of
//! each change ahead, key by key at once (`ready`), applies key by key so
//! that a refused key keeps its last applied revision running and blocks
//! no other (`rollout`), and answers for on status requests (`status`).
//! No coordinator: each replica watches NATS.

pub mod publish;
pub mod ready;
pub mod rollout;
pub mod status;
pub mod watch;

use crate::config::{Config, FragmentKey};
use crate::error::ErrorChain;
use crate::nats::connect;
use crate::wasm::WasmRuntime;
use ready::{Ready, TenantLimits, Watchers};
use rollout::Rollout;
use status::{Answer, Book, KeyStatus};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use watch::Change;

/// How long changes arriving together are gathered into one try.
const GATHER: Duration = Duration::from_millis(100);
/// How long a change NATS kept from running waits to be tried again.
const TRY_AGAIN: Duration = Duration::from_secs(2);

/// Why the fragments could not be read at start.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A bucket of fragments cannot be read.
    #[error(transparent)]
    Read(#[from] watch::ReadError),
    /// Status requests cannot be answered.
    #[error("cannot answer status requests for bucket {bucket:?}")]
    Status {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// One replica's view of its fragments: what runs, what changes, and the
/// tasks that watch the buckets and answer for them.
pub struct Deploy {
    /// What runs, what was refused, what waits to be tried.
    pub rollout: Rollout,
    /// Changes seen and where ready ones go, until
    /// [`compile_ahead`](Self::compile_ahead) takes them.
    unstarted: Option<(
        mpsc::UnboundedReceiver<Change>,
        mpsc::UnboundedSender<Ready>,
    )>,
    /// Changes made ready.
    readied: mpsc::UnboundedReceiver<Ready>,
    watchers: Watchers,
    limits: TenantLimits,
    book: Book,
    /// The buckets answered for: (tenant, bucket).
    sources: Vec<(Option<String>, String)>,
    service: String,
    replica: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Deploy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Deploy {
    /// Reads what every fragment source of `config` holds now, and starts
    /// watching them and answering status requests: the platform's through
    /// `own`, each tenant's through a connection of its own identity (a
    /// tenant that cannot connect is logged and left out). `None` when the
    /// file has no source.
    pub async fn open(
        config: &Config,
        own: &async_nats::Client,
    ) -> Result<Option<Deploy>, DeployError> {
        let sources = config.fragment_sources();
        if sources.is_empty() {
            return Ok(None);
        }
        let (sender, seen) = mpsc::unbounded_channel();
        let (ready, readied) = mpsc::unbounded_channel();
        let limits = TenantLimits::default();
        limits.set(config);
        let mut deploy = Deploy {
            rollout: Rollout::default(),
            unstarted: Some((seen, ready)),
            readied,
            watchers: Watchers::new(),
            limits,
            book: Book::default(),
            sources: Vec::new(),
            service: config.service.name.clone(),
            replica: nuid::next().to_string(),
            tasks: Vec::new(),
        };
        for (tenant, keys) in sources {
            let client = match tenant {
                None => own.clone(),
                Some(t) => {
                    let name = format!("{}/{} deploy", config.service.name, t.name);
                    let (ended, _ends) = mpsc::unbounded_channel();
                    match connect::connect(&name, &t.nats, ended).await {
                        Ok(c) => c.client,
                        Err(e) => {
                            tracing::error!(tenant = %t.name, bucket = %keys.bucket, "cannot read the tenant's fragments: {}", ErrorChain(&e));
                            continue;
                        }
                    }
                }
            };
            let tenant = tenant.map(|t| t.name.clone());
            let js = async_nats::jetstream::new(client.clone());
            let fragments = watch::read(&js, &tenant, keys).await?;
            let known: HashMap<String, u64> = fragments
                .iter()
                .map(|f| (f.key.key.clone(), f.revision))
                .collect();
            for f in fragments {
                deploy.rollout.record(Change {
                    key: f.key.clone(),
                    fragment: Some(f),
                });
            }
            deploy
                .watchers
                .insert((tenant.clone(), keys.bucket.clone()), js.clone());
            deploy.tasks.push(tokio::spawn(watch::watch(
                js,
                tenant.clone(),
                keys.clone(),
                known,
                sender.clone(),
            )));
            let responder = status::serve(
                client,
                tenant.clone(),
                keys.bucket.clone(),
                deploy.book.clone(),
            )
            .await
            .map_err(|source| DeployError::Status {
                bucket: keys.bucket.clone(),
                source,
            })?;
            deploy.tasks.push(responder);
            deploy.sources.push((tenant, keys.bucket.clone()));
        }
        Ok(Some(deploy))
    }

    /// Starts compiling the components of each change ahead of its apply,
    /// on `wasm`; changes seen until then wait for it.
    pub fn compile_ahead(&mut self, wasm: Arc<WasmRuntime>) {
        if let Some((seen, ready)) = self.unstarted.take() {
            self.tasks.push(tokio::spawn(ready::forward(
                seen,
                self.watchers.clone(),
                self.limits.clone(),
                wasm,
                ready,
            )));
        }
    }

    /// Takes the tenants' quotas of `config`, the file now running.
    pub fn set_limits(&self, config: &Config) {
        self.limits.set(config);
    }

    /// What status requests are answered with, for the statistics too.
    pub fn book(&self) -> Book {
        self.book.clone()
    }

    /// Waits for a change of a fragment, and gathers those that arrive
    /// with it, or, while a change waits to be tried again, for its turn;
    /// `None` when no watch is left and nothing waits.
    pub async fn changed(&mut self) -> Option<()> {
        let first = if self.rollout.has_pending() {
            tokio::select! {
                ready = self.readied.recv() => ready,
                () = tokio::time::sleep(TRY_AGAIN) => return Some(()),
            }
        } else {
            self.readied.recv().await
        }?;
        self.take(first);
        tokio::time::sleep(GATHER).await;
        while let Ok(more) = self.readied.try_recv() {
            self.take(more);
        }
        Some(())
    }

    fn take(&mut self, ready: Ready) {
        match ready.refused {
            None => self.rollout.record(ready.change),
            Some(e) => self
                .rollout
                .refuse_early(ready.change, ErrorChain(&e).to_string()),
        }
    }

    /// Updates what status requests are answered with, from the rollout
    /// and `handlers`: each running subscriber's fragment, name and digest.
    pub fn publish_status<'a>(
        &self,
        handlers: impl Iterator<Item = (&'a FragmentKey, &'a str, &'a str)>,
    ) {
        let mut by_key: BTreeMap<&FragmentKey, BTreeMap<String, String>> = BTreeMap::new();
        for (key, name, digest) in handlers {
            by_key
                .entry(key)
                .or_default()
                .insert(name.to_string(), digest.to_string());
        }
        let mut book = self.book.write().expect("status book lock");
        for (tenant, bucket) in &self.sources {
            let keys = self
                .rollout
                .keys()
                .filter(|k| &k.tenant == tenant && &k.bucket == bucket)
                .map(|k| KeyStatus {
                    key: k.key.clone(),
                    revision: self.rollout.applied_revision(k),
                    handlers: by_key.get(k).cloned().unwrap_or_default(),
                    refused: self.rollout.refusal(k).cloned(),
                    refusals: self.rollout.refusals(k),
                })
                .collect();
            book.insert(
                (tenant.clone(), bucket.clone()),
                Answer {
                    service: self.service.clone(),
                    replica: self.replica.clone(),
                    bucket: bucket.clone(),
                    keys,
                },
            );
        }
    }
}
