//! Who owns a lab, so that the stale sweep removes only labs whose process is gone.
//!
//! A lab's names carry its owner's pid, but pids are reused. So while a process holds any lab
//! (or runs preflight) it keeps a marker file `/run/netting-chaos/<pid>` holding its start time
//! (field 22 of `/proc/<pid>/stat`, clock ticks since boot). A lab is alive only when the
//! marker is there and the process with that pid has that start time. The marker is written
//! before the first namespace is created, and removed when the process's last lab is gone.
//! `/run` is a tmpfs, so a reboot clears markers together with the namespaces.
//!
//! The same directory holds two lock files that stay (removing a lock file while another
//! process waits on it would break the lock): `subnet.lock` (choosing a /24) and `sweep.lock`
//! (one sweep at a time).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::error::LabError;

/// Directory of the marker files and the subnet lock.
pub const MARKER_DIR: &str = "/run/netting-chaos";

/// The start time (field 22, clock ticks since boot) from the text of `/proc/<pid>/stat`.
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // Field 2 is the command in parentheses and may itself contain spaces and parentheses:
    // fields 3 onward start after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The state letter (field 3: `R`, `S`, `T` for stopped, `Z` for zombie, ...) from the text of
/// `/proc/<pid>/stat`.
pub fn parse_stat_state(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

fn read_stat(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The start time of the live process `pid`, `None` if there is none.
pub fn start_time(pid: u32) -> Option<u64> {
    parse_stat_start_time(&read_stat(pid)?)
}

/// The state letter of process `pid` (`T` when stopped), `None` if there is no such process.
pub fn process_state(pid: u32) -> Option<char> {
    parse_stat_state(&read_stat(pid)?)
}

/// Whether a lab named after `pid` is left over from a dead run, given the start time in its
/// marker and the start time of the live process with that pid (if any). This process's own
/// labs are never stale: it is alive, and it may be between creating a name and its marker.
pub fn is_stale(pid: u32, own_pid: u32, marker: Option<u64>, live_start: Option<u64>) -> bool {
    if pid == own_pid {
        return false;
    }
    match (marker, live_start) {
        (Some(recorded), Some(live)) => recorded != live,
        // No marker: the owner never vouched for it (or is gone). No process: gone.
        _ => true,
    }
}

/// Path of `pid`'s marker file.
pub(crate) fn marker_path(pid: u32) -> PathBuf {
    Path::new(MARKER_DIR).join(pid.to_string())
}

/// The start time recorded in `pid`'s marker, if there is a readable one.
pub(crate) fn read_marker(pid: u32) -> Option<u64> {
    fs::read_to_string(marker_path(pid))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pids that have marker files.
pub(crate) fn marker_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir(MARKER_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn create_marker_dir() -> Result<(), LabError> {
    fs::create_dir_all(MARKER_DIR).map_err(|source| LabError::Io {
        action: "create",
        path: PathBuf::from(MARKER_DIR),
        source,
    })
}

fn write_marker() -> Result<(), LabError> {
    let pid = std::process::id();
    let start = start_time(pid).ok_or_else(|| LabError::Io {
        action: "read the start time from",
        path: PathBuf::from(format!("/proc/{pid}/stat")),
        source: io::Error::new(io::ErrorKind::InvalidData, "no field 22"),
    })?;
    create_marker_dir()?;
    // Written under another name and renamed, so a sweep never reads half a marker.
    let path = marker_path(pid);
    let tmp = Path::new(MARKER_DIR).join(format!(".{pid}.tmp"));
    fs::write(&tmp, format!("{start}\n")).map_err(|source| LabError::Io {
        action: "write marker",
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, &path).map_err(|source| LabError::Io {
        action: "write marker",
        path,
        source,
    })
}

/// How many holds this process has on its marker.
static HOLDS: Mutex<usize> = Mutex::new(0);

/// A hold on this process's marker: the marker exists while any hold does.
#[derive(Debug)]
pub(crate) struct MarkerHold(());

impl MarkerHold {
    /// Writes the marker if this is the first hold.
    pub(crate) fn acquire() -> Result<Self, LabError> {
        let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
        if *holds == 0 {
            write_marker()?;
        }
        *holds += 1;
        Ok(Self(()))
    }
}

impl Drop for MarkerHold {
    fn drop(&mut self) {
        let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
        *holds = holds.saturating_sub(1);
        if *holds == 0 {
            let path = marker_path(std::process::id());
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove marker");
            }
        }
    }
}

/// An exclusive `flock` on a file in [`MARKER_DIR`], released on drop. Locks of two handles
/// exclude each other also within one process (they are separate open files).
#[derive(Debug)]
pub(crate) struct FileLock(File);

impl FileLock {
    /// Blocks until the lock on `MARKER_DIR/name` is ours.
    pub(crate) fn acquire(name: &str) -> Result<Self, LabError> {
        create_marker_dir()?;
        let path = Path::new(MARKER_DIR).join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LabError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        file.lock().map_err(|source| LabError::Io {
            action: "lock",
            path,
            source,
        })?;
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too; unlocking first says so.
        let _ = self.0.unlock();
    }
}

/// Held from choosing a subnet until the host has an address on it, so that concurrent labs
/// (other threads or processes) never pick the same /24.
pub(crate) fn lock_subnets() -> Result<FileLock, LabError> {
    FileLock::acquire("subnet.lock")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (weird) name (x)) T 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 \
                        20 0 1 0 987654 12345678 200 18446744073709551615 1 1 0 0 0 0 0 0 0 \
                        0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_after_a_tricky_comm() {
        assert_eq!(parse_stat_start_time(STAT), Some(987_654));
        assert_eq!(parse_stat_state(STAT), Some('T'));
        assert_eq!(parse_stat_start_time("garbage"), None);
        assert_eq!(parse_stat_start_time("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_has_a_start_time() {
        let own = std::process::id();
        assert!(start_time(own).is_some());
        assert!(process_state(own).is_some());
        assert_eq!(process_state(u32::MAX), None);
    }

    #[test]
    fn staleness() {
        let own = 100;
        // Ours: never stale, marker or not.
        assert!(!is_stale(own, own, None, Some(5)));
        // Marker matches the live process: alive.
        assert!(!is_stale(7, own, Some(5), Some(5)));
        // The pid was reused by a process that started at another time.
        assert!(is_stale(7, own, Some(5), Some(9)));
        // The process is gone.
        assert!(is_stale(7, own, Some(5), None));
        // Nobody vouches for the lab (an unrelated process has the pid now).
        assert!(is_stale(7, own, None, Some(5)));
        assert!(is_stale(7, own, None, None));
    }
}
