//! `summary.txt`: what an operator reads first. About 40 lines at most for any run: the
//! verdict, the run, the faults, the operations, failover figures and the checks, with the
//! first violations of each failed check; everything else is in `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::format;
use super::model::{CheckResult, FailoverStats, OperationCounts, RunReport};

/// The length the summary aims at: violations are listed only while it is not reached.
pub const TARGET_LINES: usize = 40;
/// Violations listed per failed check at most; the rest are counted.
pub const VIOLATIONS_PER_CHECK: usize = 5;
/// Fault kinds listed in the failover tables (the `all` row is always kept): every kind the
/// default schedule draws, so no failover figure hides in the JSON.
const FAILOVER_KINDS: usize = 14;
/// Longest line kept from a check's detail or a violation; they are meant to be one line.
const MAX_LINE_CHARS: usize = 200;

/// The text of `summary.txt`.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", verdict(report));
    let _ = writeln!(out, "seed      {}", report.seed);
    let _ = writeln!(
        out,
        "cluster   {} replicas, {} sidecars",
        report.replicas, report.sidecars
    );
    let _ = writeln!(
        out,
        "duration  {}, started {}",
        format::duration(report.duration),
        format::utc_datetime(report.started_unix_secs)
    );
    let _ = writeln!(out, "faults    {}", faults_by_kind(report));
    let _ = writeln!(out, "leaders   {}", leadership(report));
    let _ = writeln!(out, "writes    {}", operations(&report.writes));
    let _ = writeln!(out, "reads     {}", operations(&report.reads));
    let sidecars = &report.sidecar_summary;
    let _ = writeln!(
        out,
        "sidecars  {} of {} converged on version {}, {} configs applied",
        sidecars.converged, sidecars.count, sidecars.final_version, sidecars.versions_applied
    );
    out.push('\n');
    failover(&mut out, &report.failover);
    let lines_so_far = out.lines().count();
    checks(&mut out, &report.checks, lines_so_far);
    out
}

fn verdict(report: &RunReport) -> String {
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|check| !check.passed)
        .map(|check| check.name.as_str())
        .collect();
    let word = if report.passed { "PASSED" } else { "FAILED" };
    if failed.is_empty() {
        format!("{word}: all {} checks passed", report.checks.len())
    } else {
        format!(
            "{word}: {} of {} checks failed ({})",
            failed.len(),
            report.checks.len(),
            failed.join(", ")
        )
    }
}

/// `12 injected: kill-leader 4, pause-follower 3, ...`, the most frequent kind first.
fn faults_by_kind(report: &RunReport) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in &report.faults {
        *counts.entry(fault.kind.as_str()).or_default() += 1;
    }
    let mut kinds: Vec<(&str, usize)> = counts.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let listed: Vec<String> = kinds
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    if listed.is_empty() {
        "none injected".to_owned()
    } else {
        format!("{} injected: {}", report.faults.len(), listed.join(", "))
    }
}

/// How many terms had a known leader, and how often leadership moved between nodes.
fn leadership(report: &RunReport) -> String {
    let changes = report
        .terms
        .windows(2)
        .filter(|pair| pair[0].leader != pair[1].leader)
        .count();
    let last = report
        .terms
        .last()
        .map(|term| format!(", last node {} in term {}", term.leader, term.term))
        .unwrap_or_default();
    format!(
        "{} terms with a leader, leadership moved {changes} times{last}",
        report.terms.len()
    )
}

fn operations(counts: &OperationCounts) -> String {
    format!(
        "{} invoked: {} ok, {} failed, {} unknown",
        counts.invoked, counts.ok, counts.failed, counts.unknown
    )
}

/// Failover figures in two tables, one row per fault kind and one column per figure, each
/// cell `p50/p99/max` in ms: first what writers saw, then what sidecars saw. Two narrow tables
/// read better in a terminal than one of five columns.
fn failover(out: &mut String, stats: &[FailoverStats]) {
    if stats.is_empty() {
        return;
    }
    let mut figures: Vec<&str> = Vec::new();
    let mut kinds: Vec<&str> = Vec::new();
    for stat in stats {
        if !figures.contains(&stat.figure.as_str()) {
            figures.push(&stat.figure);
        }
        if !kinds.contains(&stat.kind.as_str()) {
            kinds.push(&stat.kind);
        }
    }
    // `all` last, as the total row.
    kinds.sort_by_key(|kind| *kind == "all");
    let has_all = kinds.last() == Some(&"all");
    let hidden = kinds
        .len()
        .saturating_sub(FAILOVER_KINDS + usize::from(has_all));
    if hidden > 0 {
        kinds.drain(FAILOVER_KINDS..FAILOVER_KINDS + hidden);
    }
    let (sidecar_figures, write_figures): (Vec<&str>, Vec<&str>) = figures
        .into_iter()
        .partition(|figure| figure.contains("sidecar"));

    let _ = writeln!(
        out,
        "failover in ms, p50/p99/max; ->ack: to the first acknowledged write, \
         ->sidecars: until every sidecar applied it"
    );
    let kind_width = kinds
        .iter()
        .map(|kind| kind.chars().count())
        .max()
        .unwrap_or(0);
    for figures in [write_figures, sidecar_figures] {
        if !figures.is_empty() {
            failover_table(out, stats, &kinds, &figures, kind_width);
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "  ... and {hidden} more kinds (see report.json)");
    }
    out.push('\n');
}

fn failover_table(
    out: &mut String,
    stats: &[FailoverStats],
    kinds: &[&str],
    figures: &[&str],
    kind_width: usize,
) {
    let cell = |kind: &str, figure: &str| -> String {
        stats
            .iter()
            .find(|stat| stat.kind == kind && stat.figure == figure && stat.count > 0)
            .map_or_else(
                || "-".to_owned(),
                |stat| {
                    format!(
                        "{}/{}/{}",
                        format::millis(stat.p50),
                        format::millis(stat.p99),
                        format::millis(stat.max)
                    )
                },
            )
    };
    // Faults of the kind with this table's figures (a fault may lack some of them).
    let faults = |kind: &str| -> String {
        stats
            .iter()
            .filter(|stat| stat.kind == kind && figures.contains(&stat.figure.as_str()))
            .map(|stat| stat.count)
            .max()
            .unwrap_or(0)
            .to_string()
    };
    let mut rows: Vec<Vec<String>> = vec![
        ["kind", "n"]
            .into_iter()
            .chain(figures.iter().map(|figure| short_figure_name(figure)))
            .map(str::to_owned)
            .collect(),
    ];
    for kind in kinds {
        rows.push(
            [(*kind).to_owned(), faults(kind)]
                .into_iter()
                .chain(figures.iter().map(|figure| cell(kind, figure)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
                .max(if column == 0 { kind_width } else { 0 })
        })
        .collect();
    for row in &rows {
        let mut line = String::from(" ");
        for (column, value) in row.iter().enumerate() {
            let width = widths[column];
            // Names to the left, figures to the right.
            if column == 0 {
                let _ = write!(line, " {value:<width$}");
            } else {
                let _ = write!(line, "  {value:>width$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Column headings for the figures `run` computes, short enough to sit side by side.
fn short_figure_name(figure: &str) -> &str {
    match figure {
        "fault_to_first_ack" => "fault->ack",
        "fault_to_sidecars_converged" => "fault->sidecars",
        "heal_to_first_ack" => "heal->ack",
        "heal_to_sidecars_converged" => "heal->sidecars",
        "longest_write_gap" => "write gap",
        other => other,
    }
}

/// Every check on a line, then the first violations of each failed one while the summary is
/// under [`TARGET_LINES`] (one at least), and a count of the rest.
fn checks(out: &mut String, checks: &[CheckResult], lines_so_far: usize) {
    let passed = checks.iter().filter(|check| check.passed).count();
    let failed_with_violations = checks
        .iter()
        .filter(|check| !check.passed && !check.violations.is_empty())
        .count();
    // The header, a line per check and a "... more" line per failed check are always written.
    let fixed = 1 + checks.len() + failed_with_violations;
    let mut room = TARGET_LINES.saturating_sub(lines_so_far + fixed).max(1);
    let _ = writeln!(out, "checks: {passed} of {} passed", checks.len());
    let width = checks
        .iter()
        .map(|check| check.name.chars().count())
        .max()
        .unwrap_or(0);
    for check in checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        let _ = writeln!(
            out,
            "  {mark}  {:<width$}  {}",
            check.name,
            one_line(&check.detail)
        );
        if check.passed || check.violations.is_empty() {
            continue;
        }
        let listed = check.violations.len().min(VIOLATIONS_PER_CHECK).min(room);
        room -= listed;
        for violation in &check.violations[..listed] {
            let _ = writeln!(out, "        - {}", one_line(violation));
        }
        let more = check.violations.len() - listed;
        if listed == 0 {
            let _ = writeln!(out, "        {more} violations (see report.json)");
        } else if more > 0 {
            let _ = writeln!(out, "        ... and {more} more (see report.json)");
        }
    }
}

/// Keeps the summary's line count honest when a detail or violation spans lines or pages.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= MAX_LINE_CHARS {
        flat
    } else {
        let kept: String = flat.chars().take(MAX_LINE_CHARS - 3).collect();
        format!("{kept}...")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::report::test_support::{small_report, with_faults};

    #[test]
    fn leads_with_the_verdict_and_names_every_check() {
        let report = small_report();
        let text = summary(&report);
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("FAILED"), "{first}");
        assert!(first.contains("no-lost-writes"), "{first}");
        assert!(text.contains("seed      424242"), "{text}");
        assert!(text.contains("3 replicas, 6 sidecars"), "{text}");
        for check in &report.checks {
            assert!(
                text.contains(&check.name),
                "{} missing:\n{text}",
                check.name
            );
        }
        assert!(text.contains("4 injected:"), "{text}");
        assert!(text.contains("writes    1200 invoked: 1150 ok, 20 failed, 30 unknown"));
    }

    #[test]
    fn lists_the_first_violations_and_counts_the_rest() {
        let text = summary(&small_report());
        let violation_lines = text
            .lines()
            .filter(|line| line.trim_start().starts_with("- "))
            .count();
        assert_eq!(violation_lines, VIOLATIONS_PER_CHECK, "{text}");
        assert!(text.contains("lost write #0 "), "{text}");
        assert!(!text.contains("lost write #5 "), "{text}");
        let more = 12 - VIOLATIONS_PER_CHECK;
        assert!(
            text.contains(&format!("... and {more} more")),
            "no count of the rest:\n{text}"
        );
    }

    #[test]
    fn failover_figures_are_in_milliseconds_per_kind() {
        let text = summary(&small_report());
        let row = text
            .lines()
            .find(|line| line.trim_start().starts_with("kill-leader"))
            .unwrap();
        assert!(row.contains("1500.0/2900.0/3000.0"), "{row}");
        let all_rows = text
            .lines()
            .filter(|line| line.starts_with("  all "))
            .count();
        assert_eq!(all_rows, 1, "{text}");
    }

    #[test]
    fn passing_run_says_so() {
        let mut report = small_report();
        report.passed = true;
        for check in &mut report.checks {
            check.passed = true;
            check.violations.clear();
        }
        let text = summary(&report);
        assert!(text.starts_with("PASSED: all 3 checks passed"), "{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }

    #[test]
    fn stays_short_for_a_long_run_with_many_failures() {
        let mut report = with_faults(1_000);
        let more_checks = report.checks.clone();
        report.checks.extend(more_checks);
        for check in &mut report.checks {
            check.passed = false;
            check.detail = "line one\nline two ".repeat(100);
            check.violations = (0..500).map(|i| format!("violation {i}")).collect();
        }
        let text = summary(&report);
        assert!(
            text.lines().count() <= 40,
            "{} lines:\n{text}",
            text.lines().count()
        );
        assert!(
            text.lines().all(|line| line.chars().count() <= 240),
            "{text}"
        );
    }
}
