//! The Raft log, vote and commit point in redb.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader};
use redb::{Durability, ReadableTableMetadata};

use super::db::{self, Db, LOG, META, SNAPSHOT, blocking, db_error, key};
use super::error::StorageError;
use crate::types::{Entry, LogId, NodeId, TypeConfig, Vote};

type RaftResult<T> = Result<T, openraft::StorageError<NodeId>>;

/// Upper bound of what one [`RaftLogReader::limited_get_log_entries`] call reads, so that one
/// replication round to a lagging follower stays a reasonable message.
const MAX_READ_BYTES: usize = 4 << 20;

/// The Raft log storage: entries, vote, commit point and purge point, each change committed to
/// disk before it is reported done.
#[derive(Debug)]
pub struct LogStore {
    db: Arc<Db>,
}

/// A read-only view of the log, handed to openraft's replication tasks.
#[derive(Debug, Clone)]
pub struct LogReader {
    db: Arc<Db>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// True when this node has Raft state on disk (a vote, a log entry, a purge point or a
    /// snapshot): it was part of a cluster and must never bootstrap a new one.
    pub fn has_state(&self) -> Result<bool, StorageError> {
        let path = self.db.path();
        let operation = "checking for raft state";
        self.db.read(operation, |txn| {
            let meta = txn.open_table(META).map_err(db_error(path, operation))?;
            let has_meta = |name: &str| -> Result<bool, StorageError> {
                Ok(meta.get(name).map_err(db_error(path, operation))?.is_some())
            };
            if has_meta(key::VOTE)? || has_meta(key::LAST_PURGED)? {
                return Ok(true);
            }
            let log = txn.open_table(LOG).map_err(db_error(path, operation))?;
            if !log.is_empty().map_err(db_error(path, operation))? {
                return Ok(true);
            }
            let snapshot = txn
                .open_table(SNAPSHOT)
                .map_err(db_error(path, operation))?;
            Ok(snapshot
                .get(key::SNAPSHOT_META)
                .map_err(db_error(path, operation))?
                .is_some())
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &std::path::Path {
        self.db.path()
    }

    fn reader(&self) -> LogReader {
        LogReader {
            db: Arc::clone(&self.db),
        }
    }

    async fn read_meta<T>(&self, name: &'static str) -> Result<Option<T>, StorageError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        blocking(&self.db, move |db| {
            let operation = "reading a record";
            db.read(operation, |txn| {
                let meta = txn
                    .open_table(META)
                    .map_err(db_error(db.path(), operation))?;
                db::get_json(db.path(), &meta, name)
            })
        })
        .await
    }

    async fn write_meta<T>(
        &self,
        operation: &'static str,
        durability: Durability,
        name: &'static str,
        value: Option<T>,
    ) -> Result<(), StorageError>
    where
        T: serde::Serialize + Send + 'static,
    {
        blocking(&self.db, move |db| {
            db.write(operation, durability, |txn| {
                let mut meta = db::open_writable(txn, db.path(), META, operation)?;
                match &value {
                    Some(value) => db::put_json(db.path(), &mut meta, name, value),
                    None => meta
                        .remove(name)
                        .map(drop)
                        .map_err(db_error(db.path(), operation)),
                }
            })
        })
        .await
    }
}

impl LogReader {
    async fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        blocking(&self.db, move |db| {
            let operation = "reading log entries";
            db.read(operation, |txn| {
                let log = txn
                    .open_table(LOG)
                    .map_err(db_error(db.path(), operation))?;
                db::read_entries(db.path(), &log, range, max_bytes)
            })
        })
        .await
    }
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

fn read_logs_error(e: StorageError) -> openraft::StorageError<NodeId> {
    e.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<Entry>> {
        self.entries(owned_bounds(&range), usize::MAX)
            .await
            .map_err(read_logs_error)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> RaftResult<Vec<Entry>> {
        let range = (Bound::Included(start), Bound::Excluded(end));
        self.entries(range, MAX_READ_BYTES)
            .await
            .map_err(read_logs_error)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> RaftResult<Vec<Entry>> {
        self.reader().try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> RaftResult<Vec<Entry>> {
        self.reader().limited_get_log_entries(start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> RaftResult<LogState<TypeConfig>> {
        let state = blocking(&self.db, |db| {
            let operation = "reading the log state";
            db.read(operation, |txn| {
                let meta = txn
                    .open_table(META)
                    .map_err(db_error(db.path(), operation))?;
                let last_purged: Option<LogId> = db::get_json(db.path(), &meta, key::LAST_PURGED)?;
                let log = txn
                    .open_table(LOG)
                    .map_err(db_error(db.path(), operation))?;
                let last = db::last_log_id(db.path(), &log)?;
                Ok(LogState {
                    last_purged_log_id: last_purged,
                    // With every entry purged, the last log id is the purge point.
                    last_log_id: last.or(last_purged),
                })
            })
        })
        .await;
        state.map_err(read_logs_error)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> RaftResult<()> {
        // A vote must survive a crash, or this node could vote twice in one term.
        self.write_meta(
            "saving the vote",
            Durability::Immediate,
            key::VOTE,
            Some(*vote),
        )
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> RaftResult<Option<Vote>> {
        self.read_meta(key::VOTE)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> RaftResult<()> {
        // Not fsync'd on its own: the commit point is a hint that lets a restarted node apply
        // committed entries before hearing from a leader. Losing the latest value only delays
        // that, and it reaches disk with the next durable commit (the next append or vote).
        self.write_meta(
            "saving the commit point",
            Durability::None,
            key::COMMITTED,
            committed,
        )
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> RaftResult<Option<LogId>> {
        self.read_meta(key::COMMITTED)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> RaftResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let started = Instant::now();
        let result = blocking(&self.db, move |db| {
            let operation = "appending log entries";
            db.write(operation, Durability::Immediate, |txn| {
                let mut log = db::open_writable(txn, db.path(), LOG, operation)?;
                for entry in &entries {
                    let bytes = db::encode("log entry", entry)?;
                    log.insert(entry.log_id.index, bytes.as_slice())
                        .map_err(db_error(db.path(), operation))?;
                }
                Ok(())
            })
        })
        .await;
        metrics::histogram!("netting_raft_append_seconds").record(started.elapsed().as_secs_f64());
        // Reported only now: the commit above returned after fsync, so the entries are durable.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_raft(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> RaftResult<()> {
        tracing::debug!(since = %log_id, "truncating raft log");
        blocking(&self.db, move |db| {
            let operation = "truncating the log";
            db.write(operation, Durability::Immediate, |txn| {
                let mut log = db::open_writable(txn, db.path(), LOG, operation)?;
                log.retain_in(log_id.index.., |_, _| false)
                    .map_err(db_error(db.path(), operation))
            })
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> RaftResult<()> {
        tracing::debug!(upto = %log_id, "purging raft log");
        blocking(&self.db, move |db| {
            let operation = "purging the log";
            // The purge point and the removal commit together: a crash never leaves entries
            // missing below an older purge point.
            db.write(operation, Durability::Immediate, |txn| {
                let mut meta = db::open_writable(txn, db.path(), META, operation)?;
                db::put_json(db.path(), &mut meta, key::LAST_PURGED, &log_id)?;
                let mut log = db::open_writable(txn, db.path(), LOG, operation)?;
                log.retain_in(..=log_id.index, |_, _| false)
                    .map_err(db_error(db.path(), operation))
            })
        })
        .await
        .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
