//! The figures of a run, computed from the fault log and the history: failover per fault,
//! terms and their leaders, the rate of acknowledged writes, and percentiles per fault kind.

use std::collections::BTreeMap;

use crate::history::{History, Micros, Outcome, RegisterOp, SidecarEventKind};
use crate::report::{FailoverStats, FaultRecord, OperationCounts, TermRecord};
use crate::workload::REGISTER_NAMESPACE;

/// What the runner wrote down when it injected and healed a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultLog {
    pub kind: String,
    pub targets: Vec<usize>,
    pub detail: String,
    pub injected: Micros,
    pub healed: Micros,
    pub leader_before: Option<u64>,
    pub term_before: Option<u64>,
    /// When the cluster was seen healthy again after the heal; `None` if it was not within
    /// the settle timeout.
    pub recovered: Option<Micros>,
}

/// Acknowledged writes as `(invoked, completed, version or None, touches sidecars)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    invoked: Micros,
    completed: Micros,
    /// Catalog version the write was applied at; `None` for a removal that found nothing.
    version: Option<u64>,
    /// Whether sidecars subscribe to what it changed (the register namespace).
    pushed: bool,
}

fn acks(history: &History) -> Vec<Ack> {
    let pushed_prefix = format!("{REGISTER_NAMESPACE}/");
    let ledger = history.ledger.iter().filter_map(|w| {
        (w.outcome == Outcome::Ok).then_some(Ack {
            invoked: w.invoked,
            completed: w.completed?,
            version: w.version,
            // Probes write in the namespace sidecars subscribe to.
            pushed: w.entry.starts_with(&pushed_prefix),
        })
    });
    let registers = history.registers.iter().filter_map(|op| {
        let write = matches!(op.op, RegisterOp::Write { .. });
        (write && op.outcome == Outcome::Ok).then_some(Ack {
            invoked: op.invoked,
            completed: op.completed?,
            version: op.version,
            pushed: true,
        })
    });
    let mut all: Vec<Ack> = ledger.chain(registers).collect();
    all.sort_by_key(|a| a.completed);
    all
}

/// Per sidecar, `(at, highest version so far)` in time order: a step function to search.
fn sidecar_progress(history: &History) -> BTreeMap<u32, Vec<(Micros, u64)>> {
    let mut events: Vec<_> = history.sidecars.iter().collect();
    events.sort_by_key(|e| (e.sidecar, e.at));
    let mut progress: BTreeMap<u32, Vec<(Micros, u64)>> = BTreeMap::new();
    for event in events {
        if !matches!(
            event.kind,
            SidecarEventKind::Applied | SidecarEventKind::Received
        ) {
            continue;
        }
        let steps = progress.entry(event.sidecar).or_default();
        let best = steps.last().map_or(0, |(_, v)| *v).max(event.version);
        steps.push((event.at, best));
    }
    progress
}

/// When every sidecar had reached `version`; `None` if one never did.
fn all_sidecars_reached(
    progress: &BTreeMap<u32, Vec<(Micros, u64)>>,
    version: u64,
) -> Option<Micros> {
    let mut latest = 0;
    for steps in progress.values() {
        let index = steps.partition_point(|(_, v)| *v < version);
        let (at, _) = steps.get(index)?;
        latest = latest.max(*at);
    }
    Some(latest)
}

/// The first write invoked at or after `since` that was acknowledged (by completion time),
/// and the first such write that sidecars are pushed.
fn first_acks(acks: &[Ack], since: Micros) -> (Option<Ack>, Option<Ack>) {
    let mut first = None;
    let mut first_pushed = None;
    for ack in acks.iter().filter(|a| a.invoked >= since) {
        if first.is_none() {
            first = Some(*ack);
        }
        if ack.pushed && ack.version.is_some() {
            first_pushed = Some(*ack);
            break;
        }
    }
    (first, first_pushed)
}

/// The figures of each fault. A fault's window ends where the next one starts (or the run
/// ends, at `end`).
pub fn fault_records(log: &[FaultLog], history: &History, end: Micros) -> Vec<FaultRecord> {
    let acks = acks(history);
    let progress = sidecar_progress(history);
    let leaders = leaders_by_time(history);
    log.iter()
        .enumerate()
        .map(|(index, fault)| {
            let window_end = log.get(index + 1).map_or(end, |next| next.injected);
            let converged_after = |since: Micros| {
                let (first, pushed) = first_acks(&acks, since);
                let version = pushed.and_then(|a| a.version);
                let reached = version.and_then(|v| all_sidecars_reached(&progress, v));
                (
                    first.map(|a| a.completed.saturating_sub(since)),
                    reached.map(|at| at.saturating_sub(since)),
                    version,
                )
            };
            let (fault_to_first_ack, fault_to_sidecars_converged, fault_converge_version) =
                converged_after(fault.injected);
            let (heal_to_first_ack, heal_to_sidecars_converged, heal_converge_version) =
                converged_after(fault.healed);
            let after = leaders.iter().find(|(at, term, node)| {
                *at >= fault.injected
                    && match fault.term_before {
                        Some(before) => *term > before,
                        None => Some(*node) != fault.leader_before,
                    }
            });
            FaultRecord {
                index,
                kind: fault.kind.clone(),
                targets: fault.targets.clone(),
                detail: fault.detail.clone(),
                injected: fault.injected,
                healed: fault.healed,
                leader_before: fault.leader_before,
                term_before: fault.term_before,
                leader_after: after.map(|(_, _, node)| *node),
                term_after: after.map(|(_, term, _)| *term),
                fault_to_first_ack,
                fault_to_sidecars_converged,
                heal_to_first_ack,
                heal_to_sidecars_converged,
                longest_write_gap: longest_gap(&acks, fault.injected, window_end),
                fault_converge_version,
                heal_converge_version,
            }
        })
        .collect()
}

/// `(first seen, term, node)` of each leader, in time order.
fn leaders_by_time(history: &History) -> Vec<(Micros, u64, u64)> {
    let mut seen: BTreeMap<(u64, u64), Micros> = BTreeMap::new();
    for sample in history.samples.iter().filter(|s| s.state == "leader") {
        let first = seen
            .entry((sample.term, sample.node_id))
            .or_insert(sample.at);
        *first = (*first).min(sample.at);
    }
    let mut leaders: Vec<_> = seen
        .into_iter()
        .map(|((term, node), at)| (at, term, node))
        .collect();
    leaders.sort();
    leaders
}

/// The longest stretch in `[from, to]` without an acknowledgement.
fn longest_gap(acks: &[Ack], from: Micros, to: Micros) -> Micros {
    let mut previous = from;
    let mut longest = 0;
    for ack in acks
        .iter()
        .filter(|a| a.completed >= from && a.completed <= to)
    {
        longest = longest.max(ack.completed - previous);
        previous = ack.completed;
    }
    longest.max(to.saturating_sub(previous))
}

/// The leader of each term with when it was first and last seen leading.
pub fn terms(history: &History) -> Vec<TermRecord> {
    let mut terms: BTreeMap<(u64, u64), (Micros, Micros)> = BTreeMap::new();
    for sample in history.samples.iter().filter(|s| s.state == "leader") {
        let span = terms
            .entry((sample.term, sample.node_id))
            .or_insert((sample.at, sample.at));
        span.0 = span.0.min(sample.at);
        span.1 = span.1.max(sample.at);
    }
    terms
        .into_iter()
        .map(|((term, leader), (first_seen, last_seen))| TermRecord {
            term,
            leader,
            first_seen,
            last_seen,
        })
        .collect()
}

/// Acknowledged writes per bucket, and the bucket width: 100 ms, or wider so that a long run
/// has at most a few thousand buckets.
pub fn write_rate(history: &History, end: Micros) -> (Micros, Vec<u32>) {
    let bucket = (end / 4000).max(100_000);
    let mut counts = vec![0u32; (end / bucket + 1) as usize];
    for ack in acks(history) {
        if let Some(count) = counts.get_mut((ack.completed / bucket) as usize) {
            *count += 1;
        }
    }
    (bucket, counts)
}

/// Counts of writes (ledger and register) and of reads by outcome.
pub fn counts(history: &History) -> (OperationCounts, OperationCounts) {
    let mut writes = OperationCounts::default();
    let mut reads = OperationCounts::default();
    let add = |counts: &mut OperationCounts, outcome: Outcome| {
        counts.invoked += 1;
        match outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Unknown => counts.unknown += 1,
        }
    };
    for write in &history.ledger {
        add(&mut writes, write.outcome);
    }
    for op in &history.registers {
        match op.op {
            RegisterOp::Write { .. } => add(&mut writes, op.outcome),
            RegisterOp::Read { .. } => add(&mut reads, op.outcome),
        }
    }
    (writes, reads)
}

/// p50/p99/max of each failover figure, per fault kind and over all faults.
pub fn failover_stats(records: &[FaultRecord]) -> Vec<FailoverStats> {
    type Figure = fn(&FaultRecord) -> Option<Micros>;
    let figures: [(&str, Figure); 5] = [
        ("fault_to_first_ack", |r| r.fault_to_first_ack),
        ("fault_to_sidecars_converged", |r| {
            r.fault_to_sidecars_converged
        }),
        ("heal_to_first_ack", |r| r.heal_to_first_ack),
        ("heal_to_sidecars_converged", |r| {
            r.heal_to_sidecars_converged
        }),
        ("longest_write_gap", |r| Some(r.longest_write_gap)),
    ];
    let mut kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds.push("all");
    let mut stats = Vec::new();
    for kind in kinds {
        for (name, figure) in figures {
            let mut values: Vec<Micros> = records
                .iter()
                .filter(|r| kind == "all" || r.kind == kind)
                .filter_map(figure)
                .collect();
            if values.is_empty() {
                continue;
            }
            values.sort_unstable();
            stats.push(FailoverStats {
                kind: kind.to_owned(),
                figure: name.to_owned(),
                count: values.len(),
                p50: percentile(&values, 50.0),
                p99: percentile(&values, 99.0),
                max: values[values.len() - 1],
            });
        }
    }
    stats
}

/// Nearest-rank percentile of sorted, non-empty values.
fn percentile(sorted: &[Micros], p: f64) -> Micros {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::{LedgerWrite, RegisterOperation, ReplicaSample, SidecarEvent};

    fn ledger_ack(invoked: Micros, completed: Micros, version: u64) -> LedgerWrite {
        LedgerWrite {
            id: version,
            client: 0,
            entry: format!("e{version}"),
            register: true,
            invoked,
            completed: Some(completed),
            outcome: Outcome::Ok,
            replica: 0,
            version: Some(version),
            leader: Some(1),
        }
    }

    fn register_ack(invoked: Micros, completed: Micros, version: u64) -> RegisterOperation {
        RegisterOperation {
            id: 1000 + version,
            client: 1,
            key: "reg-0/100.64.0.0:80".to_owned(),
            op: RegisterOp::Write {
                value: Some(format!("v{version}")),
            },
            invoked,
            completed: Some(completed),
            outcome: Outcome::Ok,
            replica: 0,
            version: Some(version),
            written_at: None,
        }
    }

    fn applied(sidecar: u32, at: Micros, version: u64) -> SidecarEvent {
        SidecarEvent {
            sidecar,
            at,
            cluster_id: "c".to_owned(),
            version,
            replica: None,
            from_version: None,
            kind: SidecarEventKind::Applied,
        }
    }

    fn leader(node: u64, term: u64, at: Micros) -> ReplicaSample {
        ReplicaSample {
            replica: (node - 1) as usize,
            node_id: node,
            at,
            state: "leader".to_owned(),
            term,
            leader: Some(node),
            applied_index: 0,
            catalog_version: 0,
            last_applied: None,
        }
    }

    #[test]
    fn failover_is_measured_from_the_fault_to_the_first_new_acknowledgement() {
        let history = History {
            ledger: vec![
                ledger_ack(900, 1_000, 10),
                // Invoked before the fault: does not count as recovery.
                ledger_ack(1_500, 2_600, 11),
                ledger_ack(2_100, 2_500, 12),
                ledger_ack(5_000, 5_100, 14),
            ],
            registers: vec![register_ack(2_200, 2_700, 13)],
            sidecars: vec![
                applied(0, 2_800, 13),
                applied(1, 2_750, 12),
                applied(1, 3_000, 13),
            ],
            samples: vec![leader(1, 2, 100), leader(2, 3, 2_300)],
        };
        let log = vec![FaultLog {
            kind: "kill-leader".to_owned(),
            targets: vec![0],
            detail: String::new(),
            injected: 2_000,
            healed: 4_000,
            leader_before: Some(1),
            term_before: Some(2),
            recovered: Some(4_500),
        }];
        let records = fault_records(&log, &history, 6_000);
        let record = &records[0];
        assert_eq!(record.fault_to_first_ack, Some(500));
        assert_eq!(record.fault_to_sidecars_converged, Some(1_000));
        assert_eq!((record.leader_after, record.term_after), (Some(2), Some(3)));
        // After the heal, only write 14 (ledger, not pushed) was acknowledged.
        assert_eq!(record.heal_to_first_ack, Some(1_100));
        assert_eq!(record.heal_to_sidecars_converged, None);
        // From the fault at 2000: acks at 2500, 2600, 2700, 5100; then the window ends at 6000.
        assert_eq!(record.longest_write_gap, 2_400);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<Micros> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn terms_span_first_to_last_sighting() {
        let history = History {
            samples: vec![leader(1, 2, 100), leader(1, 2, 900), leader(3, 5, 1_000)],
            ..History::default()
        };
        let terms = terms(&history);
        assert_eq!(terms.len(), 2);
        assert_eq!((terms[0].first_seen, terms[0].last_seen), (100, 900));
        assert_eq!(terms[1].leader, 3);
    }
}
