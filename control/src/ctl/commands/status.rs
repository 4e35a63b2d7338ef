//! `nettingctl status`: every replica's Raft state side by side.

use std::collections::HashMap;
use std::io::Write;

use futures::future::join_all;
use netting_proto::catalog::v1::StatusResponse;
use serde::Serialize;

use crate::ctl::client::{CallError, Client};
use crate::ctl::error::CtlError;
use crate::ctl::output::{OutputFormat, Render, Table, emit, opt_cell};
use crate::ctl::target::Target;

/// One replica as `status` shows it. Fields other than `address` and `state` are absent for a
/// replica that did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// Raft node id: the one it answered with, else the one its peers know it by.
    pub id: Option<u64>,
    pub address: String,
    /// The replica's Raft state, `unreachable`, or `error` when it answered with an error.
    pub state: String,
    pub term: Option<u64>,
    pub leader: Option<u64>,
    pub applied_index: Option<u64>,
    pub commit_index: Option<u64>,
    /// How many entries this replica's applied index is behind the leader's last log index.
    pub lag: Option<u64>,
    pub catalog_version: Option<u64>,
    pub error: Option<String>,
}

/// The rows of `status`, printed as one table or one JSON array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StatusReport(pub Vec<StatusRow>);

impl Render for StatusReport {
    fn to_table(&self) -> String {
        let mut table = Table::new(&[
            "ID", "ADDRESS", "STATE", "TERM", "LEADER", "APPLIED", "COMMIT", "LAG", "VERSION",
            "ERROR",
        ]);
        for row in &self.0 {
            table.row(vec![
                opt_cell(row.id),
                row.address.clone(),
                row.state.clone(),
                opt_cell(row.term),
                opt_cell(row.leader),
                opt_cell(row.applied_index),
                opt_cell(row.commit_index),
                opt_cell(row.lag),
                opt_cell(row.catalog_version),
                row.error.clone().unwrap_or_default(),
            ]);
        }
        table.render()
    }
}

/// What asking one replica gave.
#[derive(Debug)]
pub struct Probe {
    pub address: String,
    /// The node id the cluster reported for this address, when it came from a members list.
    pub member_id: Option<u64>,
    pub result: Result<StatusResponse, CallError>,
}

/// A member to ask because the first replica reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    pub node_id: u64,
    /// The address as reported, shown when it cannot be dialled.
    pub reported: String,
    /// Where to ask it, or why that address cannot be dialled.
    pub target: Result<Target, String>,
}

/// The members of `first` that were not asked already, by node id or by address.
pub fn members_to_follow(first: &StatusResponse, asked: &[Target]) -> Vec<Follow> {
    first
        .members
        .iter()
        .filter(|member| member.node_id != first.node_id)
        .filter_map(|member| {
            let target = Target::parse(&member.address).map_err(|err| format!("reported {err}"));
            match &target {
                Ok(t) if asked.contains(t) => None,
                _ => Some(Follow {
                    node_id: member.node_id,
                    reported: member.address.clone(),
                    target,
                }),
            }
        })
        .collect()
}

/// A replica that a cluster-wide command asks: one given on the command line, or one the
/// cluster reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownReplica {
    /// Its Raft node id, when a replica told it.
    pub node_id: Option<u64>,
    /// The address as shown to the operator.
    pub address: String,
    /// Where to dial it, or why its reported address cannot be dialled.
    pub target: Result<Target, String>,
}

/// The replicas `sessions` and `config` ask, in order: every target given and, with a single
/// one, the other members it reports (as `status` does). Costs one `Cluster/Status` call only
/// in that single-address case.
pub async fn known_replicas(client: &Client) -> Vec<KnownReplica> {
    let given = client.targets();
    let mut replicas: Vec<KnownReplica> = given
        .iter()
        .map(|target| KnownReplica {
            node_id: None,
            address: target.to_string(),
            target: Ok(target.clone()),
        })
        .collect();
    if let ([single], [first]) = (given, replicas.as_mut_slice()) {
        // A replica that does not answer Status is still asked what was wanted, so that its
        // failure shows in the result instead of vanishing.
        if let Ok(status) = client.status_of(single).await {
            first.node_id = Some(status.node_id);
            replicas.extend(members_to_follow(&status, given).into_iter().map(|follow| {
                KnownReplica {
                    node_id: Some(follow.node_id),
                    address: follow
                        .target
                        .as_ref()
                        .map_or_else(|_| follow.reported.clone(), Target::to_string),
                    target: follow.target,
                }
            }));
        }
    }
    replicas
}

/// Asks every target at once; with a single target, then asks the other members it reports.
pub async fn probe_all(client: &Client) -> Vec<Probe> {
    let asked = client.targets();
    let mut probes: Vec<Probe> = join_all(asked.iter().map(async |target| Probe {
        address: target.to_string(),
        member_id: None,
        result: client.status_of(target).await,
    }))
    .await;

    // With several addresses the operator chose what to look at; with one, it is usually a
    // single entry point (a Service name or a first replica) and the cluster knows the rest.
    let follow = match probes.as_slice() {
        [
            Probe {
                result: Ok(first), ..
            },
        ] => members_to_follow(first, asked),
        _ => Vec::new(),
    };
    let followed = join_all(follow.into_iter().map(async |follow| match follow.target {
        Ok(target) => Probe {
            address: target.to_string(),
            member_id: Some(follow.node_id),
            result: client.status_of(&target).await,
        },
        Err(reason) => Probe {
            address: follow.reported,
            member_id: Some(follow.node_id),
            result: Err(CallError::InvalidAddress(reason)),
        },
    }))
    .await;
    probes.extend(followed);
    probes
}

/// The leader's last log index: the reference lag is measured against. When two replicas
/// claim leadership (a deposed leader that has not heard of the new term yet), the one with
/// the higher term is the real one.
pub fn leader_last_log_index<'a>(
    responses: impl IntoIterator<Item = &'a StatusResponse>,
) -> Option<u64> {
    responses
        .into_iter()
        .filter(|r| r.state == "leader")
        .max_by_key(|r| r.term)
        .map(|r| r.last_log_index)
}

/// How far `applied` is behind `reference`; unknown without a reference.
pub fn lag(reference: Option<u64>, applied: u64) -> Option<u64> {
    reference.map(|last| last.saturating_sub(applied))
}

/// Builds the rows, sorted by node id (rows without one last), then address. A replica that
/// did not answer is given the id its peers list it under, when one of them did answer.
pub fn rows(probes: &[Probe]) -> Vec<StatusRow> {
    let answered = || probes.iter().filter_map(|p| p.result.as_ref().ok());
    let reference = leader_last_log_index(answered());
    let known_ids: HashMap<String, u64> = answered()
        .flat_map(|status| &status.members)
        .filter_map(|m| Some((Target::parse(&m.address).ok()?.to_string(), m.node_id)))
        .collect();
    let mut rows: Vec<StatusRow> = probes
        .iter()
        .map(|probe| match &probe.result {
            Ok(status) => StatusRow {
                id: Some(status.node_id),
                address: probe.address.clone(),
                state: status.state.clone(),
                term: Some(status.term),
                leader: status.leader_id,
                applied_index: Some(status.applied_index),
                commit_index: Some(status.committed_index),
                lag: lag(reference, status.applied_index),
                catalog_version: Some(status.catalog_version),
                error: None,
            },
            Err(error) => StatusRow {
                id: probe
                    .member_id
                    .or_else(|| known_ids.get(&probe.address).copied()),
                address: probe.address.clone(),
                state: if error.tries_next() {
                    "unreachable"
                } else {
                    "error"
                }
                .to_owned(),
                term: None,
                leader: None,
                applied_index: None,
                commit_index: None,
                lag: None,
                catalog_version: None,
                error: Some(error.to_string()),
            },
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.id.is_none(), a.id, &a.address).cmp(&(b.id.is_none(), b.id, &b.address))
    });
    rows
}

/// Prints the status of every replica; fails (after printing) only when none answered.
pub async fn run<W: Write>(
    client: &Client,
    format: OutputFormat,
    out: &mut W,
) -> Result<(), CtlError> {
    let probes = probe_all(client).await;
    emit(out, format, &StatusReport(rows(&probes)))?;
    if probes.iter().any(|p| p.result.is_ok()) {
        return Ok(());
    }
    // The rows already carry each replica's failure; the error only sets the exit code.
    Err(CtlError::NoAnswer(Vec::new()))
}

#[cfg(test)]
mod tests;
