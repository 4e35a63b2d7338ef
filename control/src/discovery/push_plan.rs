//! Which sidecar sessions a catalog change reaches, and why: the config pusher's decisions as
//! plain functions over its index of sessions and its fingerprints of services.
//!
//! Sessions are found through an index (by namespace, and by service for named
//! subscriptions), never by scanning every session per change. A change that leaves what
//! sidecars use of a service unchanged (labels, owning pods) reaches nobody as a real change:
//! one fingerprint per service, shared by all sessions, tells it apart, and such a change is
//! marked so that only a session that read the catalog since the last push (and may hold a
//! state in between that was never compared) acts on it.
//!
//! Skipping such a change still leaves the sidecars it touched a version behind the catalog,
//! and every sidecar must reach the final version. So the sessions it touched are remembered
//! and, unless a real update reaches them first, told the new version later
//! ([`PushPlanner::versions_only`]): label churn costs at most one small message per session
//! per delay, never one per change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use netting_raft::catalog::{Catalog, LogIndex, ServiceKey};

use super::fingerprint::Fingerprints;
use super::hello::Subscription;
use super::session::{Change, PushReason, SessionId};

/// The notifications of one push: a change for each session it reaches, in session order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub targets: Vec<(SessionId, Change)>,
}

/// The pusher's view of the sessions and of what it last told them.
#[derive(Debug, Default)]
pub struct PushPlanner {
    subscriptions: HashMap<SessionId, Arc<Subscription>>,
    by_namespace: HashMap<String, HashSet<SessionId>>,
    by_service: HashMap<ServiceKey, HashSet<SessionId>>,
    fingerprints: Fingerprints,
    pushed_version: LogIndex,
    /// Sessions a skipped change touched, still to be told its version.
    version_behind: HashSet<SessionId>,
}

impl PushPlanner {
    /// Starts from the catalog as it is: nothing before its version is ever pushed.
    pub fn new(catalog: &Catalog) -> Self {
        let mut planner = Self::default();
        planner.fingerprint_all(catalog);
        planner.pushed_version = catalog.version();
        planner
    }

    /// The catalog version of the last push.
    pub fn pushed_version(&self) -> LogIndex {
        self.pushed_version
    }

    pub fn sessions(&self) -> usize {
        self.subscriptions.len()
    }

    /// Whether some session waits to be told a version only skipped changes moved.
    pub fn has_versions_behind(&self) -> bool {
        !self.version_behind.is_empty()
    }

    pub fn open(&mut self, id: SessionId, subscription: Arc<Subscription>) {
        for ns in &subscription.namespaces {
            self.by_namespace.entry(ns.clone()).or_default().insert(id);
        }
        for key in &subscription.services {
            self.by_service.entry(key.clone()).or_default().insert(id);
        }
        self.subscriptions.insert(id, subscription);
    }

    pub fn close(&mut self, id: SessionId) {
        self.version_behind.remove(&id);
        let Some(subscription) = self.subscriptions.remove(&id) else {
            return;
        };
        for ns in &subscription.namespaces {
            remove_from(&mut self.by_namespace, ns, id);
        }
        for key in &subscription.services {
            remove_from(&mut self.by_service, key, id);
        }
    }

    /// What changed for sidecars since the last push, and the sessions it reaches.
    ///
    /// Fingerprints are compared only between pushes, but sessions read the live catalog
    /// whenever they connect or send a pending update. So a service written since the last
    /// push that looks unchanged (A → B → A, or created and deleted again) is still
    /// announced, marked as such: a session that read it in between holds B and must be
    /// corrected; the others drop the notice.
    pub fn plan(&mut self, catalog: &Catalog) -> Push {
        let since = self.pushed_version;
        let version = catalog.version();
        self.pushed_version = version;
        let Some(changes) = catalog.changes_since(since) else {
            // The tombstones that would tell are gone: every session is told.
            self.fingerprint_all(catalog);
            self.version_behind.clear();
            let change = Change {
                version,
                reason: PushReason::Resync,
                unchanged_since: None,
            };
            let mut targets: Vec<(SessionId, Change)> =
                self.subscriptions.keys().map(|id| (*id, change)).collect();
            targets.sort_by_key(|(id, _)| *id);
            return Push { targets };
        };
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        for service in changes.upserted {
            if self.fingerprints.update(service) {
                changed.push(service.key.clone());
            } else {
                unchanged.push(service.key.clone());
            }
        }
        for key in changes.removed {
            if self.fingerprints.remove(&key) {
                changed.push(key);
            } else {
                unchanged.push(key);
            }
        }
        let changed_ids = self.sessions_of(&changed);
        let unchanged_ids: HashSet<SessionId> = self
            .sessions_of(&unchanged)
            .difference(&changed_ids)
            .copied()
            .collect();
        // A real update carries the latest version; the others wait for theirs.
        self.version_behind.retain(|id| !changed_ids.contains(id));
        self.version_behind.extend(unchanged_ids.iter().copied());
        let change = |unchanged_since| Change {
            version,
            reason: PushReason::CatalogChange,
            unchanged_since,
        };
        let mut targets: Vec<(SessionId, Change)> = changed_ids
            .into_iter()
            .map(|id| (id, change(None)))
            .chain(
                unchanged_ids
                    .into_iter()
                    .map(|id| (id, change(Some(since)))),
            )
            .collect();
        targets.sort_by_key(|(id, _)| *id);
        Push { targets }
    }

    /// Tells the sessions that only skipped changes touched the version they are behind; a
    /// session already at it (a real update got there first) ignores the notice.
    pub fn versions_only(&mut self) -> Push {
        let change = Change {
            version: self.pushed_version,
            reason: PushReason::VersionOnly,
            unchanged_since: None,
        };
        let mut targets: Vec<(SessionId, Change)> = self
            .version_behind
            .drain()
            .filter(|id| self.subscriptions.contains_key(id))
            .map(|id| (id, change))
            .collect();
        targets.sort_by_key(|(id, _)| *id);
        Push { targets }
    }

    fn fingerprint_all(&mut self, catalog: &Catalog) {
        self.fingerprints.clear();
        for service in catalog.list(None) {
            self.fingerprints.update(service);
        }
    }

    /// The sessions that subscribe to any of `keys`.
    fn sessions_of(&self, keys: &[ServiceKey]) -> HashSet<SessionId> {
        let mut ids = HashSet::new();
        for key in keys {
            if let Some(set) = self.by_namespace.get(&key.namespace) {
                ids.extend(set.iter().copied());
            }
            if let Some(set) = self.by_service.get(key) {
                ids.extend(set.iter().copied());
            }
        }
        ids
    }
}

fn remove_from<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<SessionId>>,
    key: &K,
    id: SessionId,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
