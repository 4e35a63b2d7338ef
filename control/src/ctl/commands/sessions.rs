//! `nettingctl sessions`: the sidecars connected to every replica, and how far behind they are.

use std::io::Write;

use futures::future::join_all;
use netting_proto::discovery::v1::{ListSessionsResponse, SessionInfo};
use serde::Serialize;

use super::status::{KnownReplica, known_replicas};
use crate::ctl::args::SessionsArgs;
use crate::ctl::client::{CallError, Client};
use crate::ctl::error::CtlError;
use crate::ctl::output::{OutputFormat, Render, Table, duration_cell, emit, opt_cell, text_cell};

/// One sidecar session as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub namespace: String,
    pub pod: String,
    pub proxy_version: String,
    /// Last version the sidecar acknowledged; 0 until its first ACK.
    pub acked_version: u64,
    /// Version of the update sent and not yet acknowledged, if any.
    pub sent_version: Option<u64>,
    pub connected_for_ms: u64,
    pub nacks: u32,
}

impl SessionView {
    pub fn from_proto(info: &SessionInfo) -> Self {
        Self {
            namespace: info.namespace.clone(),
            pod: info.pod.clone(),
            proxy_version: info.proxy_version.clone(),
            acked_version: info.acked_version,
            sent_version: info.sent_version,
            connected_for_ms: info.connected_for_ms,
            nacks: info.nacks,
        }
    }

    /// Whether the sidecar has not yet acknowledged the replica's `catalog_version`.
    pub fn is_behind(&self, catalog_version: u64) -> bool {
        self.acked_version < catalog_version
    }
}

/// Sessions counted and their slowest acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub session_count: usize,
    /// Lowest acknowledged version over the sessions (0 if one acknowledged nothing yet);
    /// `null` without sessions.
    pub slowest_acked_version: Option<u64>,
    /// Sessions whose acknowledged version is below their replica's catalog version.
    pub sessions_behind: usize,
    /// NACKs over all sessions.
    pub nacks: u64,
}

impl Summary {
    /// The summary of one replica's sessions against its catalog version.
    pub fn of(catalog_version: u64, sessions: &[SessionView]) -> Self {
        Self {
            session_count: sessions.len(),
            slowest_acked_version: sessions.iter().map(|s| s.acked_version).min(),
            sessions_behind: sessions
                .iter()
                .filter(|s| s.is_behind(catalog_version))
                .count(),
            nacks: sessions.iter().map(|s| u64::from(s.nacks)).sum(),
        }
    }

    /// Both summaries together. "Behind" stays relative to each replica's own version, since
    /// replicas apply the same versions at slightly different times.
    pub fn merge(self, other: Self) -> Self {
        let slowest = match (self.slowest_acked_version, other.slowest_acked_version) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            session_count: self.session_count + other.session_count,
            slowest_acked_version: slowest,
            sessions_behind: self.sessions_behind + other.sessions_behind,
            nacks: self.nacks + other.nacks,
        }
    }
}

/// One replica as `sessions` shows it. `catalog_version` and `summary` are absent for a
/// replica that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaSessions {
    /// Raft node id: the one it answered with, else the one the cluster reported.
    pub node_id: Option<u64>,
    pub address: String,
    /// `ok`, `unreachable`, or `error` when it answered with an error.
    pub state: String,
    pub catalog_version: Option<u64>,
    pub summary: Option<Summary>,
    pub error: Option<String>,
    /// Sorted by namespace, then pod.
    pub sessions: Vec<SessionView>,
}

/// What `sessions` prints: one entry per replica, and the totals of those that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionsReport {
    pub replicas: Vec<ReplicaSessions>,
    pub total: Summary,
    /// Whether the table lists every session too; JSON always has them.
    #[serde(skip)]
    pub verbose: bool,
}

impl Render for SessionsReport {
    fn to_table(&self) -> String {
        let mut table = Table::new(&[
            "ID",
            "ADDRESS",
            "STATE",
            "VERSION",
            "SESSIONS",
            "SLOWEST-ACKED",
            "BEHIND",
            "NACKS",
            "ERROR",
        ]);
        for replica in &self.replicas {
            let summary = replica.summary.as_ref();
            table.row(vec![
                opt_cell(replica.node_id),
                replica.address.clone(),
                replica.state.clone(),
                opt_cell(replica.catalog_version),
                opt_cell(summary.map(|s| s.session_count)),
                opt_cell(summary.and_then(|s| s.slowest_acked_version)),
                opt_cell(summary.map(|s| s.sessions_behind)),
                opt_cell(summary.map(|s| s.nacks)),
                replica.error.clone().unwrap_or_default(),
            ]);
        }
        let mut text = table.render();
        let answered = self.replicas.iter().filter(|r| r.summary.is_some()).count();
        text.push_str(&format!(
            "\n{} sessions on {answered} of {} replicas; slowest acknowledged version {}; {} behind; {} NACKs\n",
            self.total.session_count,
            self.replicas.len(),
            opt_cell(self.total.slowest_acked_version),
            self.total.sessions_behind,
            self.total.nacks,
        ));
        if self.verbose {
            text.push('\n');
            if self.total.session_count == 0 {
                text.push_str("no sessions\n");
            } else {
                text.push_str(&self.sessions_table());
            }
        }
        text
    }
}

impl SessionsReport {
    fn sessions_table(&self) -> String {
        let mut table = Table::new(&[
            "REPLICA",
            "NAMESPACE/POD",
            "PROXY-VERSION",
            "ACKED",
            "IN-FLIGHT",
            "CONNECTED",
            "NACKS",
        ]);
        for replica in &self.replicas {
            for session in &replica.sessions {
                table.row(vec![
                    opt_cell(replica.node_id),
                    format!("{}/{}", session.namespace, session.pod),
                    text_cell(Some(&session.proxy_version)),
                    session.acked_version.to_string(),
                    opt_cell(session.sent_version),
                    duration_cell(session.connected_for_ms),
                    session.nacks.to_string(),
                ]);
            }
        }
        table.render()
    }
}

/// What asking one replica gave.
#[derive(Debug)]
pub struct Probe {
    pub replica: KnownReplica,
    pub result: Result<ListSessionsResponse, CallError>,
}

/// Asks every replica at once.
pub async fn probe_all(client: &Client, replicas: Vec<KnownReplica>) -> Vec<Probe> {
    join_all(replicas.into_iter().map(async |replica| {
        let result = match &replica.target {
            Ok(target) => client.sessions_of(target).await,
            Err(reason) => Err(CallError::InvalidAddress(reason.clone())),
        };
        Probe { replica, result }
    }))
    .await
}

/// Builds the report, replicas sorted by node id (those without one last), then address.
pub fn report(probes: &[Probe], verbose: bool) -> SessionsReport {
    let mut replicas: Vec<ReplicaSessions> = probes
        .iter()
        .map(|probe| match &probe.result {
            Ok(answer) => {
                let mut sessions: Vec<SessionView> = answer
                    .sessions
                    .iter()
                    .map(SessionView::from_proto)
                    .collect();
                sessions.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
                ReplicaSessions {
                    node_id: Some(answer.node_id),
                    address: probe.replica.address.clone(),
                    state: "ok".to_owned(),
                    catalog_version: Some(answer.catalog_version),
                    summary: Some(Summary::of(answer.catalog_version, &sessions)),
                    error: None,
                    sessions,
                }
            }
            Err(error) => ReplicaSessions {
                node_id: probe.replica.node_id,
                address: probe.replica.address.clone(),
                state: if error.tries_next() {
                    "unreachable"
                } else {
                    "error"
                }
                .to_owned(),
                catalog_version: None,
                summary: None,
                error: Some(error.to_string()),
                sessions: Vec::new(),
            },
        })
        .collect();
    replicas.sort_by(|a, b| {
        (a.node_id.is_none(), a.node_id, &a.address).cmp(&(
            b.node_id.is_none(),
            b.node_id,
            &b.address,
        ))
    });
    let total = replicas
        .iter()
        .filter_map(|r| r.summary)
        .fold(Summary::default(), Summary::merge);
    SessionsReport {
        replicas,
        total,
        verbose,
    }
}

/// Prints every replica's sessions; fails (after printing) only when no replica answered.
pub async fn run<W: Write>(
    client: &Client,
    args: &SessionsArgs,
    format: OutputFormat,
    out: &mut W,
) -> Result<(), CtlError> {
    let probes = probe_all(client, known_replicas(client).await).await;
    emit(out, format, &report(&probes, args.verbose))?;
    if probes.iter().any(|p| p.result.is_ok()) {
        return Ok(());
    }
    // The rows already carry each replica's failure; the error only sets the exit code.
    Err(CtlError::NoAnswer(Vec::new()))
}

#[cfg(test)]
mod tests;
