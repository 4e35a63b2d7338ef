//! The config pusher: wakes on applied catalog changes, coalesces bursts, and tells the
//! sidecar sessions a change reaches. Which sessions those are, and why, is
//! `discovery::push_plan`; when a burst is pushed is `discovery::debounce`. Notifications go
//! out with one cap on how many are in flight across every push; each session computes its
//! own update from the live catalog, so a notification carries no data and a slow session
//! costs nothing here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use netting_raft::{AppliedState, CatalogHandle};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::WatchStream;

use super::session_messages::{
    DescribeSession, FindSession, ListSessions, PushUpdate, SessionClosed, SessionId, SessionInfo,
    SessionOpened,
};
use crate::discovery::applied_times::AppliedTimes;
use crate::discovery::debounce::{Debouncer, Decision};
use crate::discovery::push_plan::{Push, PushPlanner};

struct Registered {
    namespace: String,
    pod: String,
    push: Recipient<PushUpdate>,
    describe: Recipient<DescribeSession>,
}

/// How the pusher paces its notifications.
#[derive(Debug, Clone, Copy)]
pub struct PushSettings {
    /// The quiet period that ends a burst.
    pub quiet: Duration,
    /// The longest a change waits while the catalog keeps changing.
    pub max_delay: Duration,
    /// Notifications in flight at once, across all pushes.
    pub max_in_flight: usize,
    /// How long a session whose view did not change waits to be told the new version.
    pub version_only_delay: Duration,
}

pub struct ConfigPusher {
    catalog: CatalogHandle,
    debouncer: Debouncer,
    timer: Option<SpawnHandle>,
    planner: PushPlanner,
    version_only_delay: Duration,
    version_only_timer: Option<SpawnHandle>,
    sessions: HashMap<SessionId, Registered>,
    seen_version: netting_raft::catalog::LogIndex,
    max_in_flight: usize,
    /// One permit per notification in flight, shared by every push.
    in_flight: Arc<Semaphore>,
    applied_times: AppliedTimes,
}

impl std::fmt::Debug for ConfigPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigPusher")
            .field("sessions", &self.sessions.len())
            .field("pushed_version", &self.planner.pushed_version())
            .finish_non_exhaustive()
    }
}

impl ConfigPusher {
    pub fn new(
        catalog: CatalogHandle,
        settings: PushSettings,
        applied_times: AppliedTimes,
    ) -> Self {
        let max_in_flight = settings.max_in_flight.max(1);
        Self {
            planner: catalog.read(PushPlanner::new),
            catalog,
            debouncer: Debouncer::new(settings.quiet, settings.max_delay),
            timer: None,
            version_only_delay: settings.version_only_delay,
            version_only_timer: None,
            sessions: HashMap::new(),
            seen_version: 0,
            max_in_flight,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            applied_times,
        }
    }

    fn act_on(&mut self, decision: Decision, ctx: &mut Context<Self>) {
        if decision.push {
            let planner = &mut self.planner;
            let push = self.catalog.read(|catalog| planner.plan(catalog));
            self.notify(push);
            self.arm_version_only_timer(ctx);
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

    fn arm_version_only_timer(&mut self, ctx: &mut Context<Self>) {
        if !self.planner.has_versions_behind() || self.version_only_timer.is_some() {
            return;
        }
        self.version_only_timer = Some(ctx.run_later(self.version_only_delay, |act, _| {
            act.version_only_timer = None;
            let push = act.planner.versions_only();
            act.notify(push);
        }));
    }

    /// Sends each target its change. The permits are taken in order, one per notification,
    /// so however many pushes overlap, at most `max_in_flight` notifications wait on sessions.
    fn notify(&self, push: Push) {
        let targets: Vec<_> = push
            .targets
            .into_iter()
            .filter_map(|(id, change)| self.sessions.get(&id).map(|s| (s.push.clone(), change)))
            .collect();
        let Some((_, first)) = targets.first() else {
            return;
        };
        let reason = first.reason.as_str();
        metrics::counter!("netting_config_pushes_total", "reason" => reason).increment(1);
        metrics::histogram!("netting_config_push_sessions").record(targets.len() as f64);
        tracing::debug!(
            version = first.version,
            reason,
            sessions = targets.len(),
            "pushing"
        );
        let permits = self.in_flight.clone();
        actix::spawn(async move {
            for (session, change) in targets {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                actix::spawn(async move {
                    // A session that is gone has nothing to update.
                    let _ = session.send(PushUpdate(change)).await;
                    drop(permit);
                });
            }
        });
    }
}

impl Actor for ConfigPusher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.seen_version = self.planner.pushed_version();
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
        self.planner.open(msg.id, msg.subscription);
        self.sessions.insert(
            msg.id,
            Registered {
                namespace: msg.namespace,
                pod: msg.pod,
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
        self.planner.close(msg.id);
        self.sessions.remove(&msg.id);
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
