//! The redb database behind the log and the state machine: its tables and keys, the encoding
//! of what they hold, and the checks made before anything is trusted at open.

use std::any::Any;
use std::fmt::Display;
use std::fs;
use std::io::ErrorKind;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{StorageError, corrupt};
use super::{NodeIdentity, STORAGE_FORMAT_VERSION};
use crate::types::{Entry, LogId, SnapshotMeta, Vote};

/// The one database file in the data directory.
pub(crate) const DB_FILE: &str = "raft.redb";

/// Log entries by index; values are serde_json of [`Entry`].
pub(crate) const LOG: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("log");
/// Small records by name (see [`key`]); values are serde_json.
pub(crate) const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");
/// The newest snapshot: its serde_json [`SnapshotMeta`] and its data, replaced together.
pub(crate) const SNAPSHOT: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("snapshot");

/// Keys of the [`META`] and [`SNAPSHOT`] tables.
pub(crate) mod key {
    pub(crate) const FORMAT_VERSION: &str = "format_version";
    pub(crate) const IDENTITY: &str = "identity";
    pub(crate) const VOTE: &str = "vote";
    pub(crate) const COMMITTED: &str = "committed";
    pub(crate) const LAST_PURGED: &str = "last_purged";
    pub(crate) const CLUSTER_ID: &str = "cluster_id";
    pub(crate) const SNAPSHOT_META: &str = "meta";
    pub(crate) const SNAPSHOT_DATA: &str = "data";
}

/// The open database and where it lives (for error messages).
pub(crate) struct Db {
    database: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What this layer needs of the state machine's snapshot data, which it stores as bytes: to
/// check it at open, before anything is written, and the cluster id it carries.
pub(crate) trait SnapshotData: Sized {
    /// Decodes snapshot data, checking it is the state `meta` describes.
    fn decode(path: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<Self, StorageError>;
    fn cluster_id(&self) -> Option<&str>;
}

/// What the state machine starts from, as found on disk.
#[derive(Debug)]
pub(crate) struct Recovered<S> {
    pub(crate) snapshot: Option<(SnapshotMeta, S)>,
    pub(crate) cluster_id: Option<String>,
}

impl<S> Default for Recovered<S> {
    fn default() -> Self {
        Self {
            snapshot: None,
            cluster_id: None,
        }
    }
}

impl Db {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction (a consistent view; never blocks writers).
    pub(crate) fn read<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let txn = self
            .database
            .begin_read()
            .map_err(db_error(&self.path, operation))?;
        f(&txn)
    }

    /// Runs `f` in a write transaction and commits it. With [`Durability::Immediate`] the commit
    /// returns once the data is fsync'd. When `f` fails nothing is committed.
    pub(crate) fn write<T>(
        &self,
        operation: &'static str,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut txn = self
            .database
            .begin_write()
            .map_err(db_error(&self.path, operation))?;
        txn.set_durability(durability)
            .map_err(db_error(&self.path, operation))?;
        let out = f(&txn)?;
        txn.commit().map_err(db_error(&self.path, operation))?;
        Ok(out)
    }
}

/// Runs blocking database work on tokio's blocking pool, so that an fsync never stalls the
/// runtime's workers.
pub(crate) async fn blocking<T, F>(db: &Arc<Db>, f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&Db) -> Result<T, StorageError> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| StorageError::Task(e.to_string()))?
}

pub(crate) fn db_error<E: Into<redb::Error>>(
    path: &Path,
    operation: &'static str,
) -> impl FnOnce(E) -> StorageError {
    move |e| StorageError::Database {
        path: path.to_owned(),
        operation,
        source: Box::new(e.into()),
    }
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|source| StorageError::Encode { what, source })
}

/// Decodes what was read from disk; bytes that do not decode mean the file is corrupt.
pub(crate) fn decode<T: DeserializeOwned>(
    path: &Path,
    what: impl Display,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, format_args!("{what} does not decode: {e}")))
}

/// Reads and decodes one record of the meta or snapshot table.
pub(crate) fn get_json<T: DeserializeOwned>(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StorageError> {
    let guard = table.get(key).map_err(db_error(path, "reading a record"))?;
    guard
        .map(|value| decode(path, format_args!("record {key:?}"), value.value()))
        .transpose()
}

pub(crate) fn put_json<T: Serialize>(
    path: &Path,
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &'static str,
    value: &T,
) -> Result<(), StorageError> {
    let bytes = encode(key, value)?;
    table
        .insert(key, bytes.as_slice())
        .map_err(db_error(path, "writing a record"))?;
    Ok(())
}

/// Reads log entries in `range`, stopping once `max_bytes` were read (always at least one entry).
pub(crate) fn read_entries(
    path: &Path,
    table: &impl ReadableTable<u64, &'static [u8]>,
    range: (Bound<u64>, Bound<u64>),
    max_bytes: usize,
) -> Result<Vec<Entry>, StorageError> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    for item in table
        .range(range)
        .map_err(db_error(path, "reading log entries"))?
    {
        let (index, value) = item.map_err(db_error(path, "reading log entries"))?;
        let entry = decode_entry(path, index.value(), value.value())?;
        bytes += value.value().len();
        entries.push(entry);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(entries)
}

/// Log id of the last entry in the log table.
pub(crate) fn last_log_id(
    path: &Path,
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<LogId>, StorageError> {
    let last = table
        .last()
        .map_err(db_error(path, "reading the last log entry"))?;
    last.map(|(index, value)| decode_entry(path, index.value(), value.value()).map(|e| e.log_id))
        .transpose()
}

fn decode_entry(path: &Path, index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let entry: Entry = decode(path, format_args!("log entry {index}"), bytes)?;
    if entry.log_id.index != index {
        return Err(corrupt(
            path,
            format_args!(
                "log entry stored at index {index} has log id {}",
                entry.log_id
            ),
        ));
    }
    Ok(entry)
}

/// Reads the stored snapshot's metadata and data, which are written together or not at all.
pub(crate) fn read_snapshot(
    path: &Path,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let meta: Option<SnapshotMeta> = get_json(path, table, key::SNAPSHOT_META)?;
    let data = table
        .get(key::SNAPSHOT_DATA)
        .map_err(db_error(path, "reading the snapshot"))?
        .map(|d| d.value().to_vec());
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((meta, data))),
        (None, None) => Ok(None),
        _ => Err(corrupt(
            path,
            "the snapshot table holds metadata without data or data without metadata",
        )),
    }
}

/// Opens (creating on first use) the database in `data_dir` after checking that it belongs to
/// `identity` and that everything in it decodes.
///
/// Nothing is written unless every check passes, with one exception owed to redb: a file left
/// by a crash (`kill -9`, power loss) is first recovered by redb itself, which rolls back to its
/// last committed transaction and so never loses a commit that returned.
pub(crate) fn open<S: SnapshotData>(
    data_dir: &Path,
    identity: &NodeIdentity,
) -> Result<(Db, Recovered<S>), StorageError> {
    fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    // Before redb touches anything: a refused directory must stay as it was.
    super::identity_file::check(data_dir, identity)?;
    let path = data_dir.join(DB_FILE);
    // An empty file holds nothing to lose: redb created it and died before writing a header.
    let existing = match fs::metadata(&path) {
        Ok(metadata) => metadata.len() > 0,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(corrupt(&path, e)),
    };
    if existing {
        preflight::<S>(&path, identity)?;
    }

    let mut builder = Builder::new();
    // Verify every page's checksum at open: a file damaged outside redb is then reported as
    // corrupt instead of being trusted (a plain open may panic on it).
    builder.set_check_integrity_on_open(true);
    let opened = catch_unwind(AssertUnwindSafe(|| {
        if existing {
            builder.open(&path)
        } else {
            builder.create(&path)
        }
    }));
    let database = match opened {
        Ok(Ok(database)) => database,
        Ok(Err(e)) => return Err(open_error(&path, e)),
        Err(panic) => return Err(panicked(&path, &*panic)),
    };
    let db = Db { database, path };

    let recovered = match unwind_guard(&db.path, || inspect(&db.database, &db.path, identity))? {
        Some(recovered) => recovered,
        None => {
            initialise(&db, identity)?;
            Recovered::default()
        }
    };
    mirror_cluster_id_from_snapshot(&db, &recovered)?;
    super::identity_file::ensure(data_dir, identity)?;
    Ok((db, recovered))
}

/// Checks a file that redb shut down cleanly through a read-only handle, so that a refusal
/// (another node's data, a newer format, corruption) leaves every byte of it as it was.
///
/// A read-only handle does not verify page checksums, so redb may panic on a damaged file; the
/// panic is caught and reported as corruption, still before anything is written. (This relies on
/// unwinding, the workspace's panic strategy.)
fn preflight<S: SnapshotData>(path: &Path, identity: &NodeIdentity) -> Result<(), StorageError> {
    let opened = catch_unwind(|| Builder::new().open_read_only(path));
    let database = match opened {
        Ok(Ok(database)) => database,
        // Left by a crash: only a writable open can recover it, and the same checks follow it.
        Ok(Err(DatabaseError::RepairAborted)) => return Ok(()),
        Ok(Err(e)) => return Err(open_error(path, e)),
        Err(panic) => return Err(panicked(path, &*panic)),
    };
    unwind_guard(path, || inspect::<S>(&database, path, identity)).map(|_| ())
}

fn open_error(path: &Path, e: DatabaseError) -> StorageError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StorageError::InUse {
            path: path.to_owned(),
        },
        other => corrupt(path, other),
    }
}

fn panicked(path: &Path, panic: &(dyn Any + Send)) -> StorageError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    corrupt(
        path,
        format_args!("the database engine failed reading it: {message}"),
    )
}

/// Reading a damaged file may panic inside redb; that is a corrupt file, not a crash.
fn unwind_guard<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(panicked(path, &*panic)))
}

/// Validates everything stored: format version, identity, every record and log entry, the
/// snapshot. `None` means the database holds no table yet (never initialised).
fn inspect<S: SnapshotData>(
    database: &impl ReadableDatabase,
    path: &Path,
    identity: &NodeIdentity,
) -> Result<Option<Recovered<S>>, StorageError> {
    inspect_tables(database, path, identity).map_err(|e| match e {
        // At open, a read that fails means the file cannot be used as it is.
        StorageError::Database { source, .. } => corrupt(path, source),
        other => other,
    })
}

fn inspect_tables<S: SnapshotData>(
    database: &impl ReadableDatabase,
    path: &Path,
    identity: &NodeIdentity,
) -> Result<Option<Recovered<S>>, StorageError> {
    let operation = "reading the stored state";
    let txn = database.begin_read().map_err(db_error(path, operation))?;
    if txn
        .list_tables()
        .map_err(db_error(path, operation))?
        .next()
        .is_none()
    {
        return Ok(None);
    }
    let meta = txn.open_table(META).map_err(db_error(path, operation))?;
    let version: u32 = get_json(path, &meta, key::FORMAT_VERSION)?
        .ok_or_else(|| corrupt(path, "no storage format version is recorded"))?;
    if version != STORAGE_FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            path: path.to_owned(),
            found: version,
            supported: STORAGE_FORMAT_VERSION,
        });
    }
    let stored: NodeIdentity = get_json(path, &meta, key::IDENTITY)?
        .ok_or_else(|| corrupt(path, "no node identity is recorded"))?;
    if stored.node_id != identity.node_id {
        return Err(StorageError::WrongNode {
            path: path.to_owned(),
            found: stored.node_id,
            expected: identity.node_id,
        });
    }
    if stored.cluster_name != identity.cluster_name {
        return Err(StorageError::WrongCluster {
            path: path.to_owned(),
            found: stored.cluster_name,
            expected: identity.cluster_name.clone(),
        });
    }
    let _: Option<Vote> = get_json(path, &meta, key::VOTE)?;
    let _: Option<LogId> = get_json(path, &meta, key::COMMITTED)?;
    let _: Option<LogId> = get_json(path, &meta, key::LAST_PURGED)?;
    let cluster_id: Option<String> = get_json(path, &meta, key::CLUSTER_ID)?;

    let log = txn.open_table(LOG).map_err(db_error(path, operation))?;
    read_entries(path, &log, (Bound::Unbounded, Bound::Unbounded), usize::MAX)?;

    let snapshots = txn
        .open_table(SNAPSHOT)
        .map_err(db_error(path, operation))?;
    let snapshot = match read_snapshot(path, &snapshots)? {
        Some((meta, data)) => {
            let payload = S::decode(path, &meta, &data)?;
            Some((meta, payload))
        }
        None => None,
    };
    Ok(Some(Recovered {
        snapshot,
        cluster_id,
    }))
}

fn initialise(db: &Db, identity: &NodeIdentity) -> Result<(), StorageError> {
    let operation = "initialising the raft storage";
    db.write(operation, Durability::Immediate, |txn| {
        open_writable(txn, &db.path, LOG, operation)?;
        open_writable(txn, &db.path, SNAPSHOT, operation)?;
        let mut meta = open_writable(txn, &db.path, META, operation)?;
        put_json(
            &db.path,
            &mut meta,
            key::FORMAT_VERSION,
            &STORAGE_FORMAT_VERSION,
        )?;
        put_json(&db.path, &mut meta, key::IDENTITY, identity)?;
        Ok(())
    })?;
    tracing::info!(path = %db.path.display(), node_id = identity.node_id, cluster = %identity.cluster_name,
        "initialised new raft storage");
    Ok(())
}

/// The cluster id is mirrored into the meta table when applied; a snapshot installed before a
/// crash may carry one the table does not have yet.
fn mirror_cluster_id_from_snapshot<S: SnapshotData>(
    db: &Db,
    recovered: &Recovered<S>,
) -> Result<(), StorageError> {
    let Some((_, payload)) = &recovered.snapshot else {
        return Ok(());
    };
    match payload.cluster_id() {
        Some(id) if recovered.cluster_id.as_deref() != Some(id) => write_cluster_id(db, id),
        _ => Ok(()),
    }
}

pub(crate) fn write_cluster_id(db: &Db, cluster_id: &str) -> Result<(), StorageError> {
    let operation = "recording the cluster id";
    db.write(operation, Durability::Immediate, |txn| {
        let mut meta = open_writable(txn, &db.path, META, operation)?;
        put_json(&db.path, &mut meta, key::CLUSTER_ID, &cluster_id)
    })
}

/// Opens (creating if missing) a table in a write transaction.
pub(crate) fn open_writable<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn WriteTransaction,
    path: &Path,
    table: TableDefinition<'_, K, V>,
    operation: &'static str,
) -> Result<redb::Table<'txn, K, V>, StorageError> {
    txn.open_table(table).map_err(db_error(path, operation))
}
