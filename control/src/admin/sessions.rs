//! The `/debug/sessions` view: the sidecars connected to this replica, built by a plain
//! function from what the config pusher reports.

use netting_raft::NodeId;
use netting_raft::catalog::LogIndex;
use serde::Serialize;

use crate::actors::session_messages::SessionInfo;

/// What `/debug/sessions` shows. Field names are part of the operator's interface: add, don't
/// rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionsDebugView {
    pub node_id: NodeId,
    /// This replica's catalog version; a session whose `acked_version` is lower is behind.
    pub catalog_version: LogIndex,
    /// Sorted by namespace, then pod.
    pub sessions: Vec<SessionDebugView>,
}

/// One sidecar session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionDebugView {
    pub pod: String,
    pub namespace: String,
    pub proxy_version: String,
    /// `null` until the sidecar acknowledged its first update.
    pub acked_version: Option<LogIndex>,
    /// Version of the update in flight, if any.
    pub sent_version: Option<LogIndex>,
    pub connected_for_ms: u64,
    pub nacks: u32,
}

/// Builds the view of `sessions` on replica `node_id` at `catalog_version`.
pub fn sessions_view(
    node_id: NodeId,
    catalog_version: LogIndex,
    sessions: &[SessionInfo],
) -> SessionsDebugView {
    let mut sessions: Vec<SessionDebugView> = sessions
        .iter()
        .map(|info| SessionDebugView {
            pod: info.pod.clone(),
            namespace: info.namespace.clone(),
            proxy_version: info.proxy_version.clone(),
            acked_version: info.acked_version,
            sent_version: info.sent_version,
            connected_for_ms: u64::try_from(info.connected_for.as_millis()).unwrap_or(u64::MAX),
            nacks: info.nacks,
        })
        .collect();
    sessions.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    SessionsDebugView {
        node_id,
        catalog_version,
        sessions,
    }
}
