//! **No request applied twice, by the replicas' own record.** Each replica remembers the
//! request ids it applied and logs an error when one is applied a second time (the journal
//! in `netting_raft::storage`, independent of the replicated record that deduplicates). The
//! lab appends every life of a replica to one log file, so the logs hold every such report of
//! the run, across kills and restarts.
//!
//! This check complements `writes-applied-once`, which sees duplicates from outside through
//! the values reads found; this one sees duplicates no read happened to catch.

use crate::report::CheckResult;

/// What the replica's journal logs when a request id is applied a second time.
pub const APPLIED_TWICE: &str = "a request was applied twice";

/// Violations listed in the check's result; the detail line has the count.
const LISTED: usize = 50;

/// The `requests-applied-once` check over each replica's log text.
pub fn requests_applied_once(logs: &[(usize, String)]) -> CheckResult {
    let mut count = 0usize;
    let mut violations = Vec::new();
    for (replica, text) in logs {
        for line in text.lines().filter(|line| line.contains(APPLIED_TWICE)) {
            count += 1;
            if violations.len() < LISTED {
                violations.push(format!("replica {replica}: {}", line.trim()));
            }
        }
    }
    CheckResult {
        name: "requests-applied-once".to_owned(),
        passed: count == 0,
        detail: format!(
            "{count} request ids applied more than once, as the replicas' own journals report ({} logs read)",
            logs.len()
        ),
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal report in any replica's log fails the check and is named with its replica.
    #[test]
    fn a_reported_second_application_fails_the_check() {
        let logs = vec![
            (0, "INFO started\nINFO leader elected\n".to_owned()),
            (
                2,
                format!(
                    "INFO started\nERROR {APPLIED_TWICE} request=netting-chaos-3#17 index=912\n"
                ),
            ),
        ];
        let check = requests_applied_once(&logs);
        assert!(!check.passed);
        assert_eq!(check.violations.len(), 1);
        assert!(
            check.violations[0].starts_with("replica 2:"),
            "{:?}",
            check.violations
        );
        assert!(
            check.detail.starts_with("1 request ids"),
            "{}",
            check.detail
        );
    }

    /// The phrase is the one the replicas' journal logs: were it reworded there, this check
    /// would pass whatever happened.
    #[test]
    fn the_phrase_is_the_journals() {
        let journal = include_str!("../../../raft/src/storage/journal.rs");
        assert!(
            journal.contains(&format!("\"{APPLIED_TWICE}")),
            "journal.rs no longer logs {APPLIED_TWICE:?}"
        );
    }

    /// Logs without such a report pass.
    #[test]
    fn clean_logs_pass() {
        let check = requests_applied_once(&[(0, "INFO started\n".to_owned())]);
        assert!(check.passed, "{check:?}");
    }
}
