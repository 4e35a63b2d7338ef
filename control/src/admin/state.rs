//! What the admin endpoints read: the Raft node (through its probe), the catalog, the
//! Prometheus handle, the readiness policy and, when discovery runs, the config pusher.

use std::fmt;
use std::sync::Arc;

use actix::Recipient;
use metrics_exporter_prometheus::PrometheusHandle;
use netting_raft::CatalogHandle;

use super::probe::RaftProbe;
use super::readiness::ReadinessPolicy;
use crate::actors::session_messages::ListSessions;

/// Everything the admin endpoints read. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    raft: Arc<dyn RaftProbe>,
    catalog: CatalogHandle,
    prometheus: PrometheusHandle,
    readiness: ReadinessPolicy,
    sessions: Option<Recipient<ListSessions>>,
}

impl AdminState {
    /// State for a replica's Raft node (`netting_raft::Raft` is a [`RaftProbe`]), its catalog
    /// and the handle returned by [`install_recorder`](super::install_recorder).
    pub fn new(raft: impl RaftProbe, catalog: CatalogHandle, prometheus: PrometheusHandle) -> Self {
        Self {
            raft: Arc::new(raft),
            catalog,
            prometheus,
            readiness: ReadinessPolicy::default(),
            sessions: None,
        }
    }

    /// Serves `/debug/sessions` from `sessions` (the replica's config pusher); without it that
    /// path answers 404, as on a server that has no discovery service.
    pub fn with_sessions(mut self, sessions: Recipient<ListSessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Replaces the default readiness policy.
    pub fn with_readiness_policy(mut self, policy: ReadinessPolicy) -> Self {
        self.readiness = policy;
        self
    }

    pub(crate) fn raft(&self) -> &dyn RaftProbe {
        &*self.raft
    }

    pub(crate) fn catalog(&self) -> &CatalogHandle {
        &self.catalog
    }

    pub(crate) fn prometheus(&self) -> &PrometheusHandle {
        &self.prometheus
    }

    pub(crate) fn readiness_policy(&self) -> &ReadinessPolicy {
        &self.readiness
    }

    pub(crate) fn sessions(&self) -> Option<&Recipient<ListSessions>> {
        self.sessions.as_ref()
    }
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("readiness", &self.readiness)
            .field("sessions", &self.sessions.is_some())
            .finish_non_exhaustive()
    }
}
