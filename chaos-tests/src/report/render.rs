//! Writes a run's report files into its directory, and reads `report.json` back so a report can
//! be re-rendered later (after a change to the summary or the timeline, say).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::model::RunReport;
use super::summary::summary;
use super::svg::timeline_svg;

pub const REPORT_JSON: &str = "report.json";
pub const SUMMARY_TXT: &str = "summary.txt";
pub const TIMELINE_SVG: &str = "timeline.svg";

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub summary: PathBuf,
    pub timeline: PathBuf,
}

/// A report file that could not be written or read; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create report directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} is not a run report: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `report.json`, `summary.txt` and `timeline.svg` into `dir`, creating it if needed.
pub fn write_report(dir: &Path, report: &RunReport) -> Result<ReportFiles, ReportError> {
    fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = ReportFiles {
        json: dir.join(REPORT_JSON),
        summary: dir.join(SUMMARY_TXT),
        timeline: dir.join(TIMELINE_SVG),
    };
    let json = serde_json::to_vec_pretty(report).map_err(|source| ReportError::Encode {
        path: files.json.clone(),
        source,
    })?;
    write(&files.json, &json)?;
    write(&files.summary, summary(report).as_bytes())?;
    write(&files.timeline, timeline_svg(report).as_bytes())?;
    Ok(files)
}

/// Reads a `report.json` that [`write_report`] wrote.
pub fn read_report(path: &Path) -> Result<RunReport, ReportError> {
    let bytes = fs::read(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &[u8]) -> Result<(), ReportError> {
    fs::write(path, contents).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::report::test_support::small_report;

    #[test]
    fn written_report_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("runs").join("seed-424242");
        let report = small_report();
        let files = write_report(&run_dir, &report).unwrap();
        assert_eq!(files.json, run_dir.join("report.json"));
        assert_eq!(read_report(&files.json).unwrap(), report);
        assert_eq!(
            fs::read_to_string(&files.summary).unwrap(),
            summary(&report)
        );
        assert_eq!(
            fs::read_to_string(&files.timeline).unwrap(),
            timeline_svg(&report)
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nothing-here.json");
        let error = read_report(&missing).unwrap_err();
        assert!(matches!(error, ReportError::Read { .. }));
        assert!(error.to_string().contains("nothing-here.json"), "{error}");

        let garbage = dir.path().join("garbage.json");
        fs::write(&garbage, b"{\"seed\": ").unwrap();
        let error = read_report(&garbage).unwrap_err();
        assert!(matches!(error, ReportError::Decode { .. }), "{error}");
        assert!(error.to_string().contains("garbage.json"), "{error}");

        // A file where the directory should be.
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, b"").unwrap();
        let error = write_report(&blocker.join("run"), &small_report()).unwrap_err();
        assert!(matches!(error, ReportError::CreateDir { .. }), "{error}");
    }
}
