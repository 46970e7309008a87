//! What a replica runs of the fragments it has seen: the unit of a deploy
//! is one key, applied or refused whole. Changes are tried together; when
//! that is refused, each changed key is tried alone on top of what runs,
//! so a refused key keeps its last applied revision running and never
//! blocks another key — another tenant's, or the platform's.

use super::watch::Change;
use crate::config::{Fragment, FragmentKey};
use std::collections::BTreeMap;

/// Why a revision of a key was refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// The refused revision (0: its deletion).
    pub revision: u64,
    /// Why, with its causes.
    pub reason: String,
}

/// The fragments applied, refused, and seen but not yet tried.
#[derive(Debug, Default)]
pub struct Rollout {
    applied: BTreeMap<FragmentKey, Fragment>,
    pending: BTreeMap<FragmentKey, Option<Fragment>>,
    refused: BTreeMap<FragmentKey, Refusal>,
    /// Revisions refused so far, by key.
    refusals: BTreeMap<FragmentKey, u64>,
}

impl Rollout {
    /// Revisions of `key` refused since the replica started.
    pub fn refusals(&self, key: &FragmentKey) -> u64 {
        self.refusals.get(key).copied().unwrap_or(0)
    }

    /// A change seen, to try with the next [`apply`](Self::apply).
    pub fn record(&mut self, change: Change) {
        self.pending.insert(change.key, change.fragment);
    }

    /// A change refused before it was tried: its components could not be
    /// made ready.
    pub fn refuse_early(&mut self, change: Change, reason: String) {
        let key = change.key.clone();
        self.pending.insert(change.key, change.fragment);
        self.refuse(&key, reason);
        self.pending.remove(&key);
    }

    /// Whether changes wait to be tried.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What would run with every pending change taken.
    pub fn candidate(&self) -> Vec<Fragment> {
        let keys: Vec<FragmentKey> = self.pending.keys().cloned().collect();
        self.with(&keys)
    }

    /// The fragments running.
    pub fn applied(&self) -> Vec<Fragment> {
        self.applied.values().cloned().collect()
    }

    /// The revision of `key` running, if any.
    pub fn applied_revision(&self, key: &FragmentKey) -> Option<u64> {
        self.applied.get(key).map(|f| f.revision)
    }

    /// The last refusal of `key` since a revision of it was applied.
    pub fn refusal(&self, key: &FragmentKey) -> Option<&Refusal> {
        self.refused.get(key)
    }

    /// Every key applied or refused.
    pub fn keys(&self) -> impl Iterator<Item = &FragmentKey> {
        let mut keys: Vec<&FragmentKey> = self.applied.keys().chain(self.refused.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
    }

    /// What runs with the pending changes of `keys` taken.
    fn with(&self, keys: &[FragmentKey]) -> Vec<Fragment> {
        let mut fragments = self.applied.clone();
        for key in keys {
            match self.pending.get(key) {
                Some(Some(f)) => {
                    fragments.insert(key.clone(), f.clone());
                }
                Some(None) => {
                    fragments.remove(key);
                }
                None => {}
            }
        }
        fragments.into_values().collect()
    }

    fn accept(&mut self, key: &FragmentKey) {
        match self.pending.get(key).cloned().flatten() {
            Some(f) => {
                tracing::info!(key = %key, revision = f.revision, "deploy applied");
                self.applied.insert(key.clone(), f);
            }
            None => {
                tracing::info!(key = %key, "deploy removed");
                self.applied.remove(key);
            }
        }
        self.refused.remove(key);
    }

    fn refuse(&mut self, key: &FragmentKey, reason: String) {
        let revision = self
            .pending
            .get(key)
            .and_then(|f| f.as_ref().map(|f| f.revision))
            .unwrap_or(0);
        match self.applied_revision(key) {
            Some(running) => {
                tracing::error!(key = %key, revision, "deploy refused, revision {running} keeps running: {reason}")
            }
            None => tracing::error!(key = %key, revision, "deploy refused: {reason}"),
        }
        // Named in full: a tenant's CI reads it without the replica's log.
        let reason = format!("{key} revision {revision}: {reason}");
        *self.refusals.entry(key.clone()).or_default() += 1;
        self.refused
            .insert(key.clone(), Refusal { revision, reason });
    }

    /// Tries the pending changes with `runner`: all at once, then, when
    /// that is refused, key by key. A change NATS kept from running (a
    /// node down, a stream electing a leader) is neither applied nor
    /// refused: it stays pending, to be tried again.
    pub async fn apply(&mut self, runner: &mut impl Run) {
        let keys: Vec<FragmentKey> = self.pending.keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        match runner.run(self.with(&keys)).await {
            Ok(()) => keys.iter().for_each(|k| self.accept(k)),
            Err(e) if keys.len() == 1 && e.transient => return self.wait(&keys, &e.reason),
            Err(e) if keys.len() == 1 => self.refuse(&keys[0], e.reason),
            Err(_) => {
                for key in &keys {
                    match runner.run(self.with(std::slice::from_ref(key))).await {
                        Ok(()) => self.accept(key),
                        Err(e) if e.transient => {
                            self.wait(std::slice::from_ref(key), &e.reason);
                            continue;
                        }
                        Err(e) => self.refuse(key, e.reason),
                    }
                    self.pending.remove(key);
                }
                return;
            }
        }
        for key in &keys {
            self.pending.remove(key);
        }
    }

    fn wait(&self, keys: &[FragmentKey], reason: &str) {
        for key in keys {
            tracing::warn!(key = %key, "deploy waits for NATS, to be tried again: {reason}");
        }
    }
}

/// Why fragments did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRun {
    /// Why, with its causes.
    pub reason: String,
    /// NATS was unavailable: the same fragments may run when tried again.
    pub transient: bool,
}

/// Runs the fragments it is given — with the file, as a reload does — or
/// says why not, leaving what ran running.
pub trait Run {
    /// Runs `fragments`, or says why not.
    fn run(
        &mut self,
        fragments: Vec<Fragment>,
    ) -> impl std::future::Future<Output = Result<(), NotRun>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, revision: u64, text: &str) -> Change {
        let key = FragmentKey {
            tenant: None,
            bucket: "DEPLOY".into(),
            key: key.into(),
        };
        Change {
            fragment: Some(Fragment {
                key: key.clone(),
                revision,
                text: text.into(),
            }),
            key,
        }
    }

    /// Runs fragments unless one of them says "bad" (or "busy": NATS is
    /// unavailable).
    struct Picky;

    impl Run for Picky {
        async fn run(&mut self, fragments: Vec<Fragment>) -> Result<(), NotRun> {
            match fragments
                .iter()
                .find(|f| f.text == "bad" || f.text == "busy")
            {
                Some(f) => Err(NotRun {
                    reason: format!("{} is {}", f.key, f.text),
                    transient: f.text == "busy",
                }),
                None => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn a_refused_key_keeps_its_last_revision_and_blocks_no_other() {
        let mut r = Rollout::default();
        r.record(change("a", 1, "good"));
        r.record(change("b", 2, "good"));
        r.apply(&mut Picky).await;
        assert_eq!(r.applied().len(), 2);

        r.record(change("a", 3, "bad"));
        r.record(change("b", 4, "good"));
        r.apply(&mut Picky).await;
        let a = r.keys().find(|k| k.key == "a").unwrap().clone();
        let b = r.keys().find(|k| k.key == "b").unwrap().clone();
        assert_eq!(r.applied_revision(&a), Some(1), "a keeps revision 1");
        assert_eq!(r.applied_revision(&b), Some(4), "b's change applies anyway");
        assert_eq!(
            r.refusal(&a),
            Some(&Refusal {
                revision: 3,
                reason: "DEPLOY/a revision 3: DEPLOY/a is bad".into()
            })
        );
        assert!(!r.has_pending());
        assert_eq!((r.refusals(&a), r.refusals(&b)), (1, 0));

        r.record(change("a", 5, "good"));
        r.apply(&mut Picky).await;
        assert_eq!(r.applied_revision(&a), Some(5));
        assert_eq!(r.refusal(&a), None, "a revision applied clears the refusal");
    }

    #[tokio::test]
    async fn a_change_nats_kept_from_running_is_tried_again_not_refused() {
        let mut r = Rollout::default();
        r.record(change("a", 1, "busy"));
        r.record(change("b", 2, "good"));
        r.apply(&mut Picky).await;
        let b = r.keys().find(|k| k.key == "b").unwrap().clone();
        assert_eq!(r.applied_revision(&b), Some(2));
        assert!(r.has_pending(), "a waits to be tried again");
        assert_eq!(r.keys().count(), 1, "a is neither applied nor refused");
        r.record(change("a", 1, "good"));
        r.apply(&mut Picky).await;
        assert!(!r.has_pending());
        assert_eq!(r.applied().len(), 2);
    }
}
