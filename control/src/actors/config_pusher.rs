//! The config pusher: wakes on applied catalog changes, coalesces bursts, works out which
//! sidecar sessions a change touches and tells them.
//!
//! Sessions are found through an index (by namespace, and by service for named
//! subscriptions), never by scanning every session per change. A change that leaves what
//! sidecars use of a service unchanged (labels, owning pods) pushes nothing: the pusher keeps
//! one fingerprint per service, shared by all sessions, and marks such a change so that only
//! a session that read the catalog since the last push (and may hold a state the pusher
//! never compared) acts on it. Notifications go out with a cap on how
//! many are in flight; each session computes its own update from the live catalog, so a
//! notification carries no data and a slow session costs nothing here.
//!
//! Skipping such a change still leaves the sidecars it touched a version behind the catalog,
//! and the design promises that every sidecar reaches the final version. So the sessions it
//! touched are remembered and, unless a real update reaches them first, told the new version
//! (an update that changes nothing) after a longer delay: label churn costs at most one small
//! message per session per delay, never one per change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use netting_raft::catalog::{LogIndex, ServiceKey};
use netting_raft::{AppliedState, CatalogHandle};
use tokio_stream::wrappers::WatchStream;

use super::sidecar_session::{DescribeSession, PushUpdate, SessionId, SessionInfo};
use crate::discovery::debounce::{Debouncer, Decision};
use crate::discovery::hello::Subscription;
use crate::discovery::view;

/// Why sessions were told to update; recorded per push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushReason {
    /// Catalog entries changed what subscribed sidecars see.
    CatalogChange,
    /// The pusher could not tell what changed (tombstones dropped) and told every session.
    Resync,
    /// Sent while the previous update was unacknowledged and is now going out.
    Pending,
    /// The first update of a new stream.
    Connect,
    /// Only the version moved for this session: its view did not change since its last update.
    VersionOnly,
}

impl PushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PushReason::CatalogChange => "catalog_change",
            PushReason::Resync => "resync",
            PushReason::Pending => "pending",
            PushReason::Connect => "connect",
            PushReason::VersionOnly => "version_only",
        }
    }
}

/// A session has started and wants updates.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionOpened {
    pub id: SessionId,
    pub namespace: String,
    pub pod: String,
    pub subscription: Arc<Subscription>,
    pub push: Recipient<PushUpdate>,
    pub describe: Recipient<DescribeSession>,
}

/// A session has ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    pub id: SessionId,
}

/// Describes every session of this replica.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct ListSessions;

/// Describes the session of one pod, if it is connected here.
#[derive(Debug, Message)]
#[rtype(result = "Option<SessionInfo>")]
pub struct FindSession {
    pub namespace: String,
    pub pod: String,
}

struct Registered {
    namespace: String,
    pod: String,
    subscription: Arc<Subscription>,
    push: Recipient<PushUpdate>,
    describe: Recipient<DescribeSession>,
}

/// When each catalog version was applied here, for the commit-to-ACK histogram. Bounded: only
/// the most recent versions are kept.
#[derive(Debug, Clone, Default)]
pub struct AppliedTimes {
    inner: Arc<std::sync::Mutex<std::collections::VecDeque<(LogIndex, Instant)>>>,
}

impl AppliedTimes {
    const KEEP: usize = 4096;

    fn record(&self, version: LogIndex, at: Instant) {
        if let Ok(mut times) = self.inner.lock() {
            if times.back().is_some_and(|(v, _)| *v >= version) {
                return;
            }
            if times.len() == Self::KEEP {
                times.pop_front();
            }
            times.push_back((version, at));
        }
    }

    /// Time since `version` was applied, if it is still remembered.
    pub fn since_applied(&self, version: LogIndex) -> Option<Duration> {
        let times = self.inner.lock().ok()?;
        let idx = times.partition_point(|(v, _)| *v < version);
        times
            .get(idx)
            .filter(|(v, _)| *v == version)
            .map(|(_, at)| at.elapsed())
    }
}

/// How the pusher paces its notifications.
#[derive(Debug, Clone, Copy)]
pub struct PushSettings {
    /// The quiet period that ends a burst.
    pub quiet: Duration,
    /// The longest a change waits while the catalog keeps changing.
    pub max_delay: Duration,
    /// Notifications in flight at once.
    pub max_in_flight: usize,
    /// How long a session whose view did not change waits to be told the new version.
    pub version_only_delay: Duration,
}

pub struct ConfigPusher {
    catalog: CatalogHandle,
    debouncer: Debouncer,
    timer: Option<SpawnHandle>,
    /// Sessions a skipped change touched, still to be told its version.
    version_behind: HashSet<SessionId>,
    version_only_delay: Duration,
    version_only_timer: Option<SpawnHandle>,
    sessions: HashMap<SessionId, Registered>,
    by_namespace: HashMap<String, HashSet<SessionId>>,
    by_service: HashMap<ServiceKey, HashSet<SessionId>>,
    fingerprints: HashMap<ServiceKey, u64>,
    pushed_version: LogIndex,
    seen_version: LogIndex,
    max_in_flight: usize,
    applied_times: AppliedTimes,
}

impl std::fmt::Debug for ConfigPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigPusher")
            .field("sessions", &self.sessions.len())
            .field("pushed_version", &self.pushed_version)
            .finish_non_exhaustive()
    }
}

impl ConfigPusher {
    pub fn new(
        catalog: CatalogHandle,
        settings: PushSettings,
        applied_times: AppliedTimes,
    ) -> Self {
        Self {
            catalog,
            debouncer: Debouncer::new(settings.quiet, settings.max_delay),
            timer: None,
            version_behind: HashSet::new(),
            version_only_delay: settings.version_only_delay,
            version_only_timer: None,
            sessions: HashMap::new(),
            by_namespace: HashMap::new(),
            by_service: HashMap::new(),
            fingerprints: HashMap::new(),
            pushed_version: 0,
            seen_version: 0,
            max_in_flight: settings.max_in_flight.max(1),
            applied_times,
        }
    }

    fn act_on(&mut self, decision: Decision, ctx: &mut Context<Self>) {
        if decision.push {
            self.push(ctx);
        }
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = decision.wake_at {
            let delay = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                let decision = act.debouncer.on_timer(Instant::now());
                act.act_on(decision, ctx);
            }));
        }
    }

    /// Works out which services changed for sidecars since the last push and notifies the
    /// sessions that subscribe to them.
    ///
    /// Fingerprints are compared only between pushes, but sessions read the live catalog
    /// whenever they connect or send a pending update. So a service written since the last
    /// push that looks unchanged (A → B → A, or created and deleted again) is still
    /// announced, marked as such: a session that read it in between holds B and must be
    /// corrected; the others drop the notice.
    fn push(&mut self, ctx: &mut Context<Self>) {
        let since = self.pushed_version;
        let fingerprints = &mut self.fingerprints;
        let (version, changes) = self.catalog.read(|catalog| {
            let Some(changes) = catalog.changes_since(since) else {
                fingerprints.clear();
                for service in catalog.list(None) {
                    fingerprints.insert(service.key.clone(), view::fingerprint(service));
                }
                return (catalog.version(), None);
            };
            let mut changed = Vec::new();
            let mut unchanged = Vec::new();
            for service in changes.upserted {
                let print = view::fingerprint(service);
                if fingerprints.insert(service.key.clone(), print) != Some(print) {
                    changed.push(service.key.clone());
                } else {
                    unchanged.push(service.key.clone());
                }
            }
            for key in changes.removed {
                if fingerprints.remove(&key).is_some() {
                    changed.push(key);
                } else {
                    unchanged.push(key);
                }
            }
            (catalog.version(), Some((changed, unchanged)))
        });
        self.pushed_version = version;
        type Target = (Recipient<PushUpdate>, Option<LogIndex>);
        let (reason, targets): (PushReason, Vec<Target>) = match changes {
            None => {
                self.version_behind.clear();
                (
                    PushReason::Resync,
                    self.sessions
                        .values()
                        .map(|s| (s.push.clone(), None))
                        .collect(),
                )
            }
            Some((changed, unchanged)) => {
                let changed_ids = self.sessions_of(&changed);
                let unchanged_ids: HashSet<SessionId> = self
                    .sessions_of(&unchanged)
                    .difference(&changed_ids)
                    .copied()
                    .collect();
                // A real update carries the latest version; the others wait for theirs.
                self.version_behind.retain(|id| !changed_ids.contains(id));
                self.version_behind.extend(unchanged_ids.iter().copied());
                self.arm_version_only_timer(ctx);
                let targets = changed_ids
                    .iter()
                    .map(|id| (id, None))
                    .chain(unchanged_ids.iter().map(|id| (id, Some(since))))
                    .filter_map(|(id, unchanged_since)| {
                        self.sessions
                            .get(id)
                            .map(|s| (s.push.clone(), unchanged_since))
                    })
                    .collect();
                (PushReason::CatalogChange, targets)
            }
        };
        self.notify(version, reason, targets);
    }

    fn arm_version_only_timer(&mut self, ctx: &mut Context<Self>) {
        if self.version_behind.is_empty() || self.version_only_timer.is_some() {
            return;
        }
        self.version_only_timer = Some(ctx.run_later(self.version_only_delay, |act, _| {
            act.version_only_timer = None;
            act.push_versions_only();
        }));
    }

    /// Tells the sessions that only skipped changes touched the version they are behind; a
    /// session already at it (a real update got there first) ignores the notice.
    fn push_versions_only(&mut self) {
        let targets = self
            .version_behind
            .drain()
            .filter_map(|id| self.sessions.get(&id))
            .map(|s| (s.push.clone(), None))
            .collect();
        self.notify(self.pushed_version, PushReason::VersionOnly, targets);
    }

    fn notify(
        &self,
        version: LogIndex,
        reason: PushReason,
        targets: Vec<(Recipient<PushUpdate>, Option<LogIndex>)>,
    ) {
        if targets.is_empty() {
            return;
        }
        metrics::counter!("netting_config_pushes_total", "reason" => reason.as_str()).increment(1);
        metrics::histogram!("netting_config_push_sessions").record(targets.len() as f64);
        tracing::debug!(
            version,
            reason = reason.as_str(),
            sessions = targets.len(),
            "pushing"
        );
        let max_in_flight = self.max_in_flight;
        actix::spawn(async move {
            futures::stream::iter(targets)
                .for_each_concurrent(max_in_flight, |(session, unchanged_since)| async move {
                    // A session that is gone has nothing to update.
                    let _ = session
                        .send(PushUpdate {
                            version,
                            reason,
                            unchanged_since,
                        })
                        .await;
                })
                .await;
        });
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

    fn unregister(&mut self, id: SessionId) -> Option<Registered> {
        self.version_behind.remove(&id);
        let session = self.sessions.remove(&id)?;
        for ns in &session.subscription.namespaces {
            remove_from(&mut self.by_namespace, ns, id);
        }
        for key in &session.subscription.services {
            remove_from(&mut self.by_service, key, id);
        }
        Some(session)
    }
}

fn remove_from<K: std::hash::Hash + Eq + Clone>(
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

impl Actor for ConfigPusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let fingerprints = &mut self.fingerprints;
        self.pushed_version = self.catalog.read(|catalog| {
            for service in catalog.list(None) {
                fingerprints.insert(service.key.clone(), view::fingerprint(service));
            }
            catalog.version()
        });
        self.seen_version = self.pushed_version;
        ctx.add_stream(WatchStream::new(self.catalog.subscribe()));
    }
}

impl StreamHandler<AppliedState> for ConfigPusher {
    fn handle(&mut self, applied: AppliedState, ctx: &mut Self::Context) {
        if applied.catalog_version <= self.seen_version {
            return;
        }
        self.seen_version = applied.catalog_version;
        let now = Instant::now();
        self.applied_times.record(applied.catalog_version, now);
        let decision = self.debouncer.on_change(now);
        self.act_on(decision, ctx);
    }
}

impl Handler<SessionOpened> for ConfigPusher {
    type Result = ();

    fn handle(&mut self, msg: SessionOpened, _: &mut Self::Context) {
        for ns in &msg.subscription.namespaces {
            self.by_namespace
                .entry(ns.clone())
                .or_default()
                .insert(msg.id);
        }
        for key in &msg.subscription.services {
            self.by_service
                .entry(key.clone())
                .or_default()
                .insert(msg.id);
        }
        self.sessions.insert(
            msg.id,
            Registered {
                namespace: msg.namespace,
                pod: msg.pod,
                subscription: msg.subscription,
                push: msg.push,
                describe: msg.describe,
            },
        );
        metrics::gauge!("netting_sessions_connected").set(self.sessions.len() as f64);
    }
}

impl Handler<SessionClosed> for ConfigPusher {
    type Result = ();

    fn handle(&mut self, msg: SessionClosed, _: &mut Self::Context) {
        self.unregister(msg.id);
        metrics::gauge!("netting_sessions_connected").set(self.sessions.len() as f64);
    }
}

impl Handler<ListSessions> for ConfigPusher {
    type Result = ResponseFuture<Vec<SessionInfo>>;

    fn handle(&mut self, _: ListSessions, _: &mut Self::Context) -> Self::Result {
        let sessions: Vec<_> = self.sessions.values().map(|s| s.describe.clone()).collect();
        let max_in_flight = self.max_in_flight;
        Box::pin(async move {
            futures::stream::iter(sessions)
                .map(|s| async move { s.send(DescribeSession).await.ok() })
                .buffer_unordered(max_in_flight)
                .filter_map(futures::future::ready)
                .collect()
                .await
        })
    }
}

impl Handler<FindSession> for ConfigPusher {
    type Result = ResponseFuture<Option<SessionInfo>>;

    fn handle(&mut self, msg: FindSession, _: &mut Self::Context) -> Self::Result {
        let found = self
            .sessions
            .values()
            .find(|s| s.namespace == msg.namespace && s.pod == msg.pod)
            .map(|s| s.describe.clone());
        Box::pin(async move {
            match found {
                Some(session) => session.send(DescribeSession).await.ok(),
                None => None,
            }
        })
    }
}
