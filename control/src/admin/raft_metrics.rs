//! Turns the Raft node's metrics and the applied catalog into Prometheus gauges and counters.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use metrics::{counter, gauge};
use netting_raft::catalog::Catalog;
use netting_raft::types::RaftMetrics;
use netting_raft::{AppliedState, CatalogHandle, NodeId};
use openraft::ServerState;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use super::debug::replication_lag;
use super::probe::RaftProbe;
use super::recorder::{
    CATALOG_ENDPOINTS, CATALOG_SERVICES, CATALOG_TOMBSTONES, CATALOG_VERSION, RAFT_APPLIED_INDEX,
    RAFT_COMMITTED_INDEX, RAFT_IS_LEADER, RAFT_LAST_LOG_INDEX, RAFT_LEADER_CHANGES, RAFT_LEADER_ID,
    RAFT_LEARNERS, RAFT_REPLICATION_LAG, RAFT_TERM, RAFT_VOTERS,
};

/// How often the catalog sizes and the commit index are sampled. Both cost more than reading a
/// watch (a catalog read lock and a walk over its services; a round trip through the Raft core),
/// so they are not refreshed on every applied entry; a scrape interval is seconds anyway.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// How long a sample waits for the Raft core's commit index before skipping it.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(1);

/// Sizes of the applied catalog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogCounts {
    pub services: usize,
    pub endpoints: usize,
    pub tombstones: usize,
}

impl CatalogCounts {
    /// Counts a catalog; walks every service, so keep it off hot paths.
    pub fn of(catalog: &Catalog) -> Self {
        Self {
            services: catalog.service_count(),
            endpoints: catalog.endpoint_count(),
            tombstones: catalog.tombstone_count(),
        }
    }
}

/// Sets the Raft and catalog metrics from successive observations; remembers what it needs to
/// count leader changes and to clear the lag of peers it no longer replicates to.
#[derive(Debug, Default)]
pub struct RaftMetricsExporter {
    /// The last leader this replica knew, kept across leaderless gaps so that a re-election of
    /// the same leader is not counted as a change.
    last_leader: Option<NodeId>,
    /// Peers whose lag gauge was set, so that it can be zeroed when they stop being reported.
    lagging_peers: BTreeSet<NodeId>,
}

impl RaftMetricsExporter {
    /// A fresh exporter; registers the leader-change counter so it renders from the start.
    pub fn new() -> Self {
        counter!(RAFT_LEADER_CHANGES).increment(0);
        Self::default()
    }

    /// Updates every metric derived from `RaftMetrics`.
    pub fn observe_raft(&mut self, m: &RaftMetrics) {
        gauge!(RAFT_TERM).set(m.current_term as f64);
        gauge!(RAFT_LEADER_ID).set(m.current_leader.map_or(-1.0, |id| id as f64));
        let is_leader = m.state == ServerState::Leader && m.current_leader == Some(m.id);
        gauge!(RAFT_IS_LEADER).set(if is_leader { 1.0 } else { 0.0 });
        gauge!(RAFT_LAST_LOG_INDEX).set(index_value(m.last_log_index));
        gauge!(RAFT_APPLIED_INDEX).set(index_value(
            m.last_applied.as_ref().map(|log_id| log_id.index),
        ));

        let membership = m.membership_config.membership();
        gauge!(RAFT_VOTERS).set(membership.voter_ids().count() as f64);
        gauge!(RAFT_LEARNERS).set(membership.learner_ids().count() as f64);

        if let Some(leader) = m.current_leader
            && self.last_leader != Some(leader)
        {
            self.last_leader = Some(leader);
            counter!(RAFT_LEADER_CHANGES).increment(1);
        }

        // Only the leader knows replication progress. Peers it reported before and no longer
        // does (it stepped down, or they left the membership) go to 0 rather than keep a stale
        // value: the exporter cannot delete a series.
        let lag = replication_lag(m).unwrap_or_default();
        for peer in &self.lagging_peers {
            if !lag.contains_key(peer) {
                gauge!(RAFT_REPLICATION_LAG, "peer" => peer.to_string()).set(0.0);
            }
        }
        for (peer, (_, entries)) in &lag {
            gauge!(RAFT_REPLICATION_LAG, "peer" => peer.to_string()).set(*entries as f64);
        }
        self.lagging_peers = lag.into_keys().collect();
    }

    /// Updates the commit index; `None` means none is committed yet.
    pub fn observe_committed(&mut self, committed: Option<u64>) {
        gauge!(RAFT_COMMITTED_INDEX).set(index_value(committed));
    }

    /// Updates the catalog version.
    pub fn observe_applied(&mut self, applied: AppliedState) {
        gauge!(CATALOG_VERSION).set(applied.catalog_version as f64);
    }

    /// Updates the catalog sizes.
    pub fn observe_catalog(&mut self, counts: CatalogCounts) {
        gauge!(CATALOG_SERVICES).set(counts.services as f64);
        gauge!(CATALOG_ENDPOINTS).set(counts.endpoints as f64);
        gauge!(CATALOG_TOMBSTONES).set(counts.tombstones as f64);
    }
}

/// A log index as a gauge value: -1 for "none", like the leader id.
fn index_value(index: Option<u64>) -> f64 {
    index.map_or(-1.0, |i| i as f64)
}

/// Keeps the Raft and catalog metrics current until `shutdown` completes or the Raft node's
/// metrics channel closes. Run it as one task per replica.
pub async fn export_raft_metrics(
    raft: impl RaftProbe,
    catalog: CatalogHandle,
    shutdown: impl Future<Output = ()>,
) {
    let mut exporter = RaftMetricsExporter::new();
    let mut raft_rx = raft.metrics();
    let mut applied_rx = catalog.subscribe();
    // Everything is exported once before waiting, so a scrape right after start sees it all.
    let metrics = raft_rx.borrow_and_update().clone();
    exporter.observe_raft(&metrics);
    exporter.observe_applied(*applied_rx.borrow_and_update());
    exporter.observe_catalog(catalog.read(CatalogCounts::of));
    sample_committed(&mut exporter, &raft).await;

    let mut sample = interval_at(Instant::now() + SAMPLE_PERIOD, SAMPLE_PERIOD);
    sample.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut catalog_changed = false;

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            changed = raft_rx.changed() => {
                if changed.is_err() {
                    tracing::debug!("raft metrics channel closed; raft metrics export stops");
                    break;
                }
                // Cloned out of the watch so the Raft core is never blocked on our borrow.
                let metrics = raft_rx.borrow_and_update().clone();
                exporter.observe_raft(&metrics);
            }
            changed = applied_rx.changed() => {
                // The handle we hold keeps the sender alive, so this cannot close; if it ever
                // did, the catalog no longer changes and there is nothing left to export.
                if changed.is_err() {
                    break;
                }
                exporter.observe_applied(*applied_rx.borrow_and_update());
                catalog_changed = true;
            }
            _ = sample.tick() => {
                if catalog_changed {
                    catalog_changed = false;
                    exporter.observe_catalog(catalog.read(CatalogCounts::of));
                }
                sample_committed(&mut exporter, &raft).await;
            }
        }
    }
}

/// Exports the commit index if the Raft core tells it in time.
async fn sample_committed(exporter: &mut RaftMetricsExporter, raft: &impl RaftProbe) {
    match timeout(COMMITTED_TIMEOUT, raft.committed_index()).await {
        Ok(Ok(committed)) => exporter.observe_committed(committed),
        // A stopped or busy core: keep the last value, /readyz reports the cause.
        Ok(Err(error)) => tracing::debug!(%error, "commit index unavailable"),
        Err(_) => tracing::debug!("commit index not answered in time"),
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusRecorder;

    use super::*;
    use crate::admin::probe::fake::ScriptedRaft;
    use crate::admin::tests::support::{follower, leader, log_id, recorder, sample_value};

    fn render(recorder: &PrometheusRecorder) -> String {
        recorder.handle().render()
    }

    /// The leader-change counter counts changes to a different leader, not leaderless gaps
    /// or the same leader coming back.
    #[test]
    fn leader_changes_count_only_different_leaders() {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            let mut exporter = RaftMetricsExporter::new();
            let mut m = follower(2, 1, 5, Some(log_id(5, 40)));
            exporter.observe_raft(&m);
            m.current_leader = None;
            exporter.observe_raft(&m);
            m.current_leader = Some(1);
            exporter.observe_raft(&m);
            m.current_leader = Some(3);
            exporter.observe_raft(&m);
            exporter.observe_raft(&m);
        });
        let text = render(&recorder);
        assert_eq!(
            sample_value(&text, "netting_raft_leader_changes_total"),
            Some(2.0)
        );
        assert_eq!(sample_value(&text, "netting_raft_leader_id"), Some(3.0));
        assert_eq!(sample_value(&text, "netting_raft_is_leader"), Some(0.0));
    }

    /// The leader reports each follower's lag by node id; after stepping down it reports 0.
    #[test]
    fn replication_lag_per_peer_then_zero_after_step_down() {
        let recorder = recorder();
        let mut exporter = metrics::with_local_recorder(&recorder, RaftMetricsExporter::new);
        metrics::with_local_recorder(&recorder, || {
            exporter.observe_raft(&leader(1, 5, Some(log_id(5, 40)), 45));
        });
        let text = render(&recorder);
        assert_eq!(sample_value(&text, "netting_raft_is_leader"), Some(1.0));
        assert_eq!(
            sample_value(&text, "netting_raft_replication_lag_entries{peer=\"2\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample_value(&text, "netting_raft_replication_lag_entries{peer=\"3\"}"),
            Some(46.0)
        );
        assert_eq!(
            sample_value(&text, "netting_raft_replication_lag_entries{peer=\"1\"}"),
            None
        );

        metrics::with_local_recorder(&recorder, || {
            exporter.observe_raft(&follower(1, 2, 6, Some(log_id(6, 47))));
        });
        let text = render(&recorder);
        assert_eq!(
            sample_value(&text, "netting_raft_replication_lag_entries{peer=\"2\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample_value(&text, "netting_raft_replication_lag_entries{peer=\"3\"}"),
            Some(0.0)
        );
    }

    /// Index gauges, membership sizes and catalog sizes take the observed values; "none" is -1.
    #[test]
    fn gauges_follow_observations() {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            let mut exporter = RaftMetricsExporter::new();
            exporter.observe_raft(&follower(2, 1, 5, Some(log_id(5, 40))));
            exporter.observe_committed(None);
            exporter.observe_applied(AppliedState {
                applied_index: 40,
                catalog_version: 38,
            });
            exporter.observe_catalog(CatalogCounts {
                services: 3,
                endpoints: 7,
                tombstones: 1,
            });
        });
        let text = render(&recorder);
        for (name, value) in [
            ("netting_raft_term", 5.0),
            ("netting_raft_last_log_index", 40.0),
            ("netting_raft_applied_index", 40.0),
            ("netting_raft_committed_index", -1.0),
            ("netting_raft_voters", 3.0),
            ("netting_raft_learners", 1.0),
            ("netting_catalog_version", 38.0),
            ("netting_catalog_services", 3.0),
            ("netting_catalog_endpoints", 7.0),
            ("netting_catalog_tombstones", 1.0),
        ] {
            assert_eq!(sample_value(&text, name), Some(value), "{name}");
        }
    }

    /// Lets every other task on the current-thread runtime run until it waits.
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// The export task follows metric updates, samples the commit index and the catalog, and
    /// stops on shutdown.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn export_task_follows_updates_until_shutdown() {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            // Current thread, so the task records into the local recorder, and yielding lets
            // it run until it waits again: the first sample is immediate, so no clock is needed.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let raft = std::sync::Arc::new(ScriptedRaft::new(
                    follower(2, 1, 5, Some(log_id(5, 40))),
                    Some(40),
                ));
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(export_raft_metrics(
                    std::sync::Arc::clone(&raft),
                    CatalogHandle::default(),
                    async {
                        let _ = stopped.await;
                    },
                ));
                settle().await;
                raft.metrics.send_modify(|m| {
                    m.current_leader = Some(3);
                    m.current_term = 6;
                });
                settle().await;
                let _ = stop.send(());
                task.await.unwrap();
            });
        });
        let text = render(&recorder);
        assert_eq!(
            sample_value(&text, "netting_raft_leader_id"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample_value(&text, "netting_raft_term"),
            Some(6.0),
            "{text}"
        );
        assert_eq!(
            sample_value(&text, "netting_raft_leader_changes_total"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample_value(&text, "netting_raft_committed_index"),
            Some(40.0),
            "{text}"
        );
        assert_eq!(
            sample_value(&text, "netting_catalog_services"),
            Some(0.0),
            "{text}"
        );
    }
}
