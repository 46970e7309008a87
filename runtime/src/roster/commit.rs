//! The infallible half of moving the service to a file: swaps a
//! [`Prepared`] file in. Tenants opened for it join, subscribers it removes
//! or replaces are retired (a replacement pulls once its predecessor's
//! in-flight messages are settled), new and replacing subscribers start,
//! and tenants it no longer needs close after their last subscriber. An
//! endpoint hands its subscription over to its replacement, or leaves its
//! queue group once the replacement has joined it.

use super::change::Summary;
use super::prepare::Prepared;
use super::{Retired, Roster, TenantEntry};
use crate::nats::publish::PublishRoutes;
use std::collections::HashMap;
use std::sync::Arc;

impl Roster {
    /// Runs `prepared` from now on; what it changed, by name.
    pub(crate) fn commit(&mut self, prepared: Prepared) -> Summary {
        let Prepared {
            config: new,
            change,
            mut compiled,
            opened,
            mut set_ups,
            mut endpoint_set_ups,
            schedules,
        } = prepared;
        let summary = Summary {
            schedules_put: schedules.put,
            schedules_removed: schedules.removed,
            ..Summary::of(&change)
        };
        self.routes = std::iter::once(None)
            .chain(new.tenants.iter().map(|t| Some(t.name.clone())))
            .map(|t| {
                let routes = Arc::new(PublishRoutes::new(&new, &t));
                (t, routes)
            })
            .collect();
        self.set_streams(&new.streams);
        let mut closing: HashMap<String, TenantEntry> = HashMap::new();
        for name in &change.close_tenants {
            if let Some(t) = self.tenants.remove(name) {
                closing.insert(name.clone(), t);
            }
        }
        for (name, t) in opened {
            self.register_tenant(&t);
            self.tenants.insert(name, t);
        }
        let mut closing_waits: HashMap<String, Vec<Retired>> = HashMap::new();
        let mut predecessors = HashMap::new();
        // What replaced endpoints counted, carried on by their successors
        // on the same micro-service (the same tenant's, or the service's).
        let mut endpoint_stats = HashMap::new();
        // Retired once their successors exist: each hands its subscription
        // over to its successor, or leaves its queue group after its
        // successor has joined it.
        let mut replaced_endpoints = Vec::new();
        for name in change.remove.iter().chain(&change.replace) {
            if let Some(entry) = self.endpoints.remove(name) {
                let tenant = entry.config.handler.tenant.clone();
                let same_service = new
                    .endpoints
                    .iter()
                    .any(|e| &e.name == name && e.handler.tenant == tenant);
                if let (true, Some(stats)) = (same_service, entry.stats()) {
                    endpoint_stats.insert(name.clone(), stats);
                }
                replaced_endpoints.push((name.clone(), tenant, entry));
                continue;
            }
            let Some(entry) = self.subscribers.remove(name) else {
                continue;
            };
            let tenant = entry.config.tenant.clone();
            let previous = entry.subscriber().cloned();
            // A subscriber whose name an endpoint takes over leaves the
            // statistics as a removed one does.
            let forget = change.remove.contains(name) || new.subscriber(name).is_none();
            let retirement = self.retire(entry, forget);
            if let Some(t) = tenant.filter(|t| closing.contains_key(t)) {
                closing_waits
                    .entry(t)
                    .or_default()
                    .push(retirement.released);
            }
            predecessors.insert(name.clone(), (previous, retirement.settled));
        }
        // In the file's order, as the statistics list them.
        let starting = new
            .subscribers
            .iter()
            .filter(|s| change.add.contains(&s.name) || change.replace.contains(&s.name));
        for s in starting {
            let name = &s.name;
            let loaded = compiled.remove(name).expect("compiled by prepare");
            let set_up = set_ups.remove(name).expect("set up by prepare");
            let entry = match set_up {
                Err(reason) => self.not_running_entry(s, loaded.digest, &reason),
                Ok(set_up) => match self.connection_of(s) {
                    Ok(conn) => {
                        self.running_entry(s, loaded, conn, set_up, predecessors.remove(name))
                    }
                    Err(reason) => self.not_running_entry(s, loaded.digest, &reason),
                },
            };
            self.subscribers.insert(name.clone(), entry);
        }
        let starting = new
            .endpoints
            .iter()
            .filter(|e| change.add.contains(&e.name) || change.replace.contains(&e.name));
        for e in starting {
            let loaded = compiled.remove(&e.name).expect("compiled by prepare");
            let set_up = endpoint_set_ups.remove(&e.name).expect("set up by prepare");
            let entry = match set_up {
                Ok(buckets) => {
                    let stats = endpoint_stats.remove(&e.name).unwrap_or_default();
                    // On the same connection, the successor may serve on
                    // from its predecessor's subscription.
                    let predecessor = replaced_endpoints
                        .iter()
                        .find(|(name, tenant, _)| {
                            name == &e.name
                                && tenant == &e.handler.tenant
                                && tenant
                                    .as_ref()
                                    .is_none_or(|t| !change.open_tenants.contains(t))
                        })
                        .map(|(_, _, entry)| entry);
                    self.running_endpoint(e, loaded, buckets, stats, predecessor)
                }
                Err(reason) => self.not_running_endpoint(e, loaded.digest, &reason),
            };
            self.endpoints.insert(e.name.clone(), entry);
        }
        for (name, tenant, entry) in replaced_endpoints {
            let successor = match entry.hands_over() {
                true => None,
                false => self.endpoints.get(&name).and_then(|e| e.joined()),
            };
            let retired = self.retire_endpoint(entry, successor);
            if let Some(t) = tenant.filter(|t| closing.contains_key(t)) {
                closing_waits.entry(t).or_default().push(retired);
            }
        }
        for (name, t) in closing {
            let forget = !change.open_tenants.contains(&name);
            self.close_tenant(t, closing_waits.remove(&name).unwrap_or_default(), forget);
        }
        self.config = Some(new);
        summary
    }
}
