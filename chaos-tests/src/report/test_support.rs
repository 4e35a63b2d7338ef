//! Reports written by hand for the report tests: a short run and a long one.

use super::model::{
    CheckResult, FailoverStats, FaultRecord, OperationCounts, RunReport, SidecarSummary, TermRecord,
};
use crate::history::Micros;

const SEC: Micros = 1_000_000;

/// A 2-minute run on 3 replicas: 3 terms, 4 faults of different kinds, one failed check with
/// 12 violations.
pub(super) fn small_report() -> RunReport {
    let faults = vec![
        fault(
            0,
            "kill-leader",
            &[0],
            30 * SEC,
            30 * SEC,
            "kill -9 node 1 (leader)",
        ),
        fault(
            1,
            "pause-follower",
            &[2],
            50 * SEC,
            58 * SEC,
            "SIGSTOP node 3",
        ),
        fault(
            2,
            "partition-leader-minority",
            &[1],
            75 * SEC,
            90 * SEC,
            "cut 2<->1 & 2<->3",
        ),
        fault(
            3,
            "wipe-disk",
            &[0],
            100 * SEC,
            108 * SEC,
            "node 1 restarted with an empty data dir",
        ),
    ];
    let terms = vec![
        term(1, 1, SEC / 2, 30 * SEC),
        term(2, 2, 31_500_000, 75 * SEC),
        term(3, 3, 77 * SEC, 120 * SEC),
    ];
    let acked_writes_per_bucket = (0..120u32)
        .map(|second| match second {
            30 | 75 | 76 => 0,
            31 => 18,
            _ => 38 + (second * 7) % 9,
        })
        .collect();
    RunReport {
        seed: 424_242,
        replicas: 3,
        sidecars: 6,
        started_unix_secs: 1_748_779_200,
        duration: 120 * SEC,
        faults,
        terms,
        rate_bucket: SEC,
        acked_writes_per_bucket,
        writes: OperationCounts {
            invoked: 1200,
            ok: 1150,
            failed: 20,
            unknown: 30,
        },
        reads: OperationCounts {
            invoked: 2400,
            ok: 2390,
            failed: 4,
            unknown: 6,
        },
        sidecar_summary: SidecarSummary {
            count: 6,
            versions_applied: 4321,
            converged: 6,
            final_version: 1150,
        },
        failover: vec![
            stats(
                "kill-leader",
                "fault_to_first_ack",
                1,
                1_500_000,
                2_900_000,
                3_000_000,
            ),
            stats("kill-leader", "heal_to_first_ack", 1, 2_000, 2_000, 2_000),
            stats(
                "partition-leader-minority",
                "fault_to_first_ack",
                1,
                2_100_000,
                2_100_000,
                2_100_000,
            ),
            stats("all", "fault_to_first_ack", 4, 20_000, 2_950_000, 3_000_000),
            stats("all", "heal_to_first_ack", 4, 1_800, 2_500, 2_600),
        ],
        checks: vec![
            check("one-leader-per-term", true, "3 terms, one leader each", 0),
            check(
                "no-lost-writes",
                false,
                "12 of 1150 acknowledged writes missing on node 2",
                12,
            ),
            check("linearizable", true, "3600 operations on 40 registers", 0),
        ],
        passed: false,
    }
}

/// A 1-hour run with `count` faults of five kinds, a leader change after every other fault,
/// and the write rate in 100 ms buckets.
pub(super) fn with_faults(count: usize) -> RunReport {
    const KINDS: [&str; 5] = [
        "kill-leader",
        "kill-follower",
        "pause-follower",
        "partition-leader-minority",
        "wipe-disk",
    ];
    let duration = 3600 * SEC;
    let spacing = duration / (count as u64 + 1);
    let faults: Vec<FaultRecord> = (0..count)
        .map(|index| {
            let injected = spacing * (index as u64 + 1);
            let kind = KINDS[index % KINDS.len()];
            fault(
                index,
                kind,
                &[index % 3],
                injected,
                injected + spacing / 2,
                "detail",
            )
        })
        .collect();
    let terms = (0..count / 2 + 1)
        .map(|index| {
            let start = spacing * 2 * index as u64;
            term(
                index as u64 + 1,
                index as u64 % 3 + 1,
                start + SEC,
                start + 2 * spacing,
            )
        })
        .collect();
    let mut report = small_report();
    report.duration = duration;
    report.faults = faults;
    report.terms = terms;
    report.rate_bucket = SEC / 10;
    report.acked_writes_per_bucket = (0..36_000u32).map(|bucket| 3 + bucket % 5).collect();
    report.failover = KINDS
        .iter()
        .chain(&["all"])
        .flat_map(|kind| {
            [
                "fault_to_first_ack",
                "fault_to_sidecars_converged",
                "heal_to_first_ack",
                "heal_to_sidecars_converged",
                "longest_write_gap",
            ]
            .map(|figure| stats(kind, figure, count / 5, 1_234_567, 2_345_678, 3_456_789))
        })
        .collect();
    report
}

fn fault(
    index: usize,
    kind: &str,
    targets: &[usize],
    injected: Micros,
    healed: Micros,
    detail: &str,
) -> FaultRecord {
    FaultRecord {
        index,
        kind: kind.to_owned(),
        targets: targets.to_vec(),
        detail: detail.to_owned(),
        injected,
        healed,
        leader_before: Some(1),
        term_before: Some(1),
        leader_after: Some(2),
        term_after: Some(2),
        fault_to_first_ack: Some(1_500_000),
        fault_to_sidecars_converged: Some(1_700_000),
        heal_to_first_ack: Some(2_000),
        heal_to_sidecars_converged: Some(40_000),
        longest_write_gap: 1_450_000,
        fault_converge_version: Some(120),
        heal_converge_version: Some(180),
    }
}

fn term(term: u64, leader: u64, first_seen: Micros, last_seen: Micros) -> TermRecord {
    TermRecord {
        term,
        leader,
        first_seen,
        last_seen,
    }
}

fn stats(
    kind: &str,
    figure: &str,
    count: usize,
    p50: Micros,
    p99: Micros,
    max: Micros,
) -> FailoverStats {
    FailoverStats {
        kind: kind.to_owned(),
        figure: figure.to_owned(),
        count,
        p50,
        p99,
        max,
    }
}

fn check(name: &str, passed: bool, detail: &str, violations: usize) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        passed,
        detail: detail.to_owned(),
        violations: (0..violations)
            .map(|index| format!("lost write #{index} (ledger entry default/svc/10.0.0.{index}:80, acked at version {})", 100 + index))
            .collect(),
    }
}
