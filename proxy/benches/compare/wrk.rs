//! Saturation: `wrk` with a few keep-alive connections, run inside the client's namespace,
//! while the proxy's CPU time and resident memory are read from `/proc`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::procs;

/// What `wrk --latency` printed.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrkRun {
    pub(crate) requests: u64,
    pub(crate) requests_per_second: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// `Socket errors: ...` and `Non-2xx or 3xx responses: ...` lines, if any.
    pub(crate) problems: Vec<String>,
}

/// A saturation run and what the proxy used meanwhile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Saturation {
    pub(crate) wrk: WrkRun,
    /// CPU time of the proxy (all its processes) during the run; zero without a proxy.
    pub(crate) cpu: Duration,
    /// Highest resident memory sampled during the run (every 100 ms), in bytes.
    pub(crate) rss_max: u64,
}

/// Runs `wrk -t1 -c<connections> -d<seconds>s --latency <url>` in `namespace` and watches
/// `proxy` (a pid and its children) meanwhile.
pub(crate) fn saturate(
    ip: &Path,
    namespace: &str,
    wrk: &Path,
    url: &str,
    connections: usize,
    seconds: u64,
    proxy: Option<u32>,
) -> anyhow::Result<Saturation> {
    let ticks = procs::clock_ticks();
    let pids = proxy.map(procs::tree).unwrap_or_default();
    let cpu_before = procs::cpu(&pids, ticks);
    let mut child = Command::new(ip)
        .args(["netns", "exec", namespace])
        .arg(wrk)
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting wrk")?;
    let mut rss_max = procs::rss(&pids);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        rss_max = rss_max.max(procs::rss(&pids));
        std::thread::sleep(Duration::from_millis(100));
    };
    let cpu = procs::cpu(&pids, ticks).saturating_sub(cpu_before);
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !status.success() {
        bail!(
            "wrk failed ({status}): {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wrk = parse(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))?;
    Ok(Saturation { wrk, cpu, rss_max })
}

/// Reads the figures out of `wrk --latency` output.
pub(crate) fn parse(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some(value) = line.strip_prefix("50%") {
                run.p50 = duration(value.trim())?;
                continue;
            }
            if let Some(value) = line.strip_prefix("99%") {
                run.p99 = duration(value.trim())?;
                continue;
            }
            if line.ends_with('%')
                || line
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.ends_with('%'))
            {
                continue;
            }
            in_distribution = false;
        }
        if let Some((count, _)) = line.split_once(" requests in ") {
            run.requests = count.trim().parse().ok()?;
        } else if let Some(value) = line.strip_prefix("Requests/sec:") {
            run.requests_per_second = value.trim().parse().ok()?;
        } else if line.starts_with("Socket errors") || line.starts_with("Non-2xx") {
            run.problems.push(line.to_owned());
        }
    }
    (run.requests > 0).then_some(run)
}

/// `123.45us`, `1.20ms`, `2.00s`, `1.00m`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}
