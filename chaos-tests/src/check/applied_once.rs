//! **Every acknowledged write was applied once.** Seen from outside, without the replicas'
//! help: every register value is unique in a run (`w<writer>-<sequence>`), so the log index
//! that wrote a value is one number, and everything the workload saw of it must agree on it.
//!
//! A write of value `v` acknowledged at catalog version `a` changed the register in the entry
//! at index `a` (a new value always changes it, so that entry moved the catalog's version to
//! its own index). Then:
//!
//! - a read that found `v` with the endpoint's `modify_index` `m ≠ a` saw `v` written by
//!   another entry: `v` was applied at `m` and at `a`. With `m > a` it was applied again
//!   *after* the writer was told it was done, and may have reverted another writer's change;
//! - a read served at catalog version `r < a` that found `v` saw it before the acknowledged
//!   entry existed: `v` was applied at an index `≤ r` as well (older histories carry no
//!   `modify_index`; this rule still finds the duplicate in them).
//!
//! Writes of unknown outcome are left out: no acknowledged version says where they should have
//! been applied.

use std::collections::HashMap;

use crate::history::{Outcome, RegisterOp, RegisterOperation};
use crate::report::CheckResult;

/// Violations listed in the check's result; the detail line has the count.
const LISTED: usize = 50;

/// The `writes-applied-once` check over the register operations of a run.
pub fn writes_applied_once(registers: &[RegisterOperation]) -> CheckResult {
    let mut acknowledged: HashMap<(&str, &str), (&RegisterOperation, u64)> = HashMap::new();
    for op in registers {
        if let (RegisterOp::Write { value: Some(value) }, Outcome::Ok, Some(version)) =
            (&op.op, op.outcome, op.version)
        {
            acknowledged.insert((op.key.as_str(), value.as_str()), (op, version));
        }
    }
    let mut duplicated: HashMap<u64, Vec<String>> = HashMap::new();
    let mut order = Vec::new();
    for read in registers {
        let (RegisterOp::Read { value: Some(value) }, Outcome::Ok) = (&read.op, read.outcome)
        else {
            continue;
        };
        let Some(&(write, acked)) = acknowledged.get(&(read.key.as_str(), value.as_str())) else {
            continue;
        };
        let evidence = match (read.written_at, read.version) {
            (Some(m), _) if m != acked => format!(
                "read #{} [t={}..{} µs] found it written at index {m}{}",
                read.id,
                read.invoked,
                read.completed.unwrap_or_default(),
                if m > acked {
                    ", after the acknowledged one"
                } else {
                    ""
                }
            ),
            (_, Some(r)) if r < acked => format!(
                "read #{} [t={}..{} µs] found it at catalog version {r}, before the acknowledged entry",
                read.id,
                read.invoked,
                read.completed.unwrap_or_default(),
            ),
            _ => continue,
        };
        let found = duplicated.entry(write.id).or_default();
        if found.is_empty() {
            order.push((write, acked));
        }
        found.push(evidence);
    }
    order.sort_by_key(|(write, _)| (write.invoked, write.id));
    let violations: Vec<String> = order
        .iter()
        .take(LISTED)
        .map(|(write, acked)| {
            let evidence = &duplicated[&write.id];
            let value = match &write.op {
                RegisterOp::Write { value } | RegisterOp::Read { value } => {
                    value.as_deref().unwrap_or_default()
                }
            };
            format!(
                "{}: write #{} [t={}..{} µs] of {value:?} (client {}, sent to replica {}) was \
                 acknowledged at version {acked}, but {}{}",
                write.key,
                write.id,
                write.invoked,
                write.completed.unwrap_or_default(),
                write.client,
                write.replica,
                evidence[0],
                if evidence.len() > 1 {
                    format!(" (and {} more reads)", evidence.len() - 1)
                } else {
                    String::new()
                }
            )
        })
        .chain((order.len() > LISTED).then(|| format!("... and {} more", order.len() - LISTED)))
        .collect();
    CheckResult {
        name: "writes-applied-once".to_owned(),
        passed: order.is_empty(),
        detail: format!(
            "{} acknowledged register writes; {} applied at more than one log index",
            acknowledged.len(),
            order.len()
        ),
        violations,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::history::Micros;

    const KEY: &str = "reg-0/100.64.0.11:80";

    fn write(
        id: u64,
        value: &str,
        at: Micros,
        outcome: Outcome,
        version: u64,
    ) -> RegisterOperation {
        RegisterOperation {
            id,
            client: 1,
            key: KEY.to_owned(),
            op: RegisterOp::Write {
                value: Some(value.to_owned()),
            },
            invoked: at,
            completed: (outcome != Outcome::Unknown).then_some(at + 10),
            outcome,
            replica: 0,
            version: Some(version),
            written_at: None,
        }
    }

    fn read(
        id: u64,
        value: &str,
        at: Micros,
        version: u64,
        written_at: Option<u64>,
    ) -> RegisterOperation {
        RegisterOperation {
            id,
            client: 2,
            key: KEY.to_owned(),
            op: RegisterOp::Read {
                value: Some(value.to_owned()),
            },
            invoked: at,
            completed: Some(at + 10),
            outcome: Outcome::Ok,
            replica: 1,
            version: Some(version),
            written_at,
        }
    }

    #[test]
    fn reads_that_agree_with_the_acknowledged_index_pass() {
        let check = writes_applied_once(&[
            write(1, "w1-1", 0, Outcome::Ok, 40),
            read(2, "w1-1", 100, 40, Some(40)),
            read(3, "w1-1", 200, 57, Some(40)),
        ]);
        assert!(check.passed, "{check:#?}");
        assert!(check.detail.contains("1 acknowledged"), "{}", check.detail);
    }

    /// The shape the issue describes: a forwarded write applied at 2951, retried on the new
    /// leader and applied again at 2953, the writer told 2953.
    #[test]
    fn a_value_found_at_another_index_was_applied_twice() {
        let check = writes_applied_once(&[
            write(1, "w3-1322", 0, Outcome::Ok, 2953),
            read(2, "w3-1322", 100, 2951, Some(2951)),
            read(3, "w3-1322", 150, 2952, Some(2951)),
        ]);
        assert!(!check.passed);
        assert_eq!(check.violations.len(), 1, "{check:#?}");
        let violation = &check.violations[0];
        assert!(violation.contains("write #1"), "{violation}");
        assert!(violation.contains("index 2951"), "{violation}");
        assert!(violation.contains("and 1 more"), "{violation}");
    }

    /// Applied again after the acknowledgement: the kind that reverts another writer.
    #[test]
    fn a_value_rewritten_after_its_acknowledgement_is_named_so() {
        let check = writes_applied_once(&[
            write(1, "w3-1", 0, Outcome::Ok, 10),
            write(2, "w2-1", 20, Outcome::Ok, 12),
            read(3, "w3-1", 100, 14, Some(14)),
        ]);
        assert!(!check.passed);
        assert!(
            check.violations[0].contains("after the acknowledged one"),
            "{:?}",
            check.violations
        );
    }

    /// Histories without `modify_index`: a read served below the acknowledged version.
    #[test]
    fn a_value_seen_below_its_acknowledged_version_was_applied_twice() {
        let check = writes_applied_once(&[
            write(1, "w1-149", 0, Outcome::Ok, 1156),
            read(2, "w1-149", 100, 1154, None),
        ]);
        assert!(!check.passed);
        assert!(
            check.violations[0].contains("catalog version 1154"),
            "{:?}",
            check.violations
        );
    }

    /// A write of unknown outcome has no acknowledged index to be held to.
    #[test]
    fn writes_of_unknown_outcome_are_not_held_to_one_index() {
        let check = writes_applied_once(&[
            write(1, "w3-1", 0, Outcome::Unknown, 10),
            read(2, "w3-1", 100, 8, Some(8)),
        ]);
        assert!(check.passed, "{check:#?}");
    }
}
