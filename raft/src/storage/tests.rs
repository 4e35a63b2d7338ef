//! Unit tests of the storage: restarts are simulated by dropping the stores and opening the
//! same data directory again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use redb::ReadableDatabase;
use tempfile::TempDir;

use super::db::{LOG, META, key};
use super::{LogStore, NodeIdentity, StateMachineStore, StorageError, database_file, open};
use crate::catalog::{
    CatalogCommand, CommandBatch, EndpointId, EndpointSpec, RequestId, ServiceKey, Source,
};
use crate::catalog_handle::AppliedState;
use crate::types::{Entry, LogId, Vote};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn identity(node_id: u64) -> NodeIdentity {
    NodeIdentity {
        node_id,
        cluster_name: "prod".to_owned(),
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let members = [1, 2, 3].into_iter().collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![members], None)),
    }
}

fn commands(term: u64, index: u64, commands: Vec<CatalogCommand>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(CommandBatch::new(commands.into_iter().map(|c| (None, c)))),
    }
}

fn init_cluster(id: &str) -> CatalogCommand {
    CatalogCommand::InitCluster {
        cluster_id: id.to_owned(),
    }
}

fn register(name: &str, last_octet: u8) -> CatalogCommand {
    CatalogCommand::RegisterEndpoint {
        key: ServiceKey::new("default", name).unwrap(),
        source: Source::Api,
        endpoint: EndpointSpec {
            id: EndpointId {
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)),
                port: 8080,
            },
            ready: true,
            zone: None,
            pod: None,
        },
        spec: None,
    }
}

fn open_node(dir: &Path, node_id: u64) -> (LogStore, StateMachineStore) {
    open(dir, &identity(node_id)).unwrap()
}

/// Applies `entries` as openraft does once they are committed: appended, then applied.
async fn append_and_apply(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    entries: Vec<Entry>,
) -> TestResult {
    log.blocking_append(entries.clone()).await?;
    sm.apply(entries).await?;
    Ok(())
}

/// A vote, log entries, the commit point and a snapshot written before a restart are read back
/// unchanged after it.
#[tokio::test]
async fn reopen_returns_the_same_vote_log_commit_point_and_snapshot() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open_node(dir.path(), 1);
    let vote = Vote::new(3, 1);
    log.save_vote(&vote).await?;
    let entries = vec![
        membership(1, 1),
        blank(2, 2),
        commands(2, 3, vec![init_cluster("c-1")]),
        blank(3, 4),
    ];
    append_and_apply(&mut log, &mut sm, entries.clone()).await?;
    log.save_committed(Some(log_id(3, 4))).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;
    let state_before = log.get_log_state().await?;
    drop((log, sm));

    let (mut log, mut sm) = open_node(dir.path(), 1);
    assert_eq!(log.read_vote().await?, Some(vote));
    assert_eq!(log.try_get_log_entries(..).await?, entries);
    assert_eq!(log.read_committed().await?, Some(log_id(3, 4)));
    assert_eq!(log.get_log_state().await?, state_before);
    let snapshot = sm
        .get_current_snapshot()
        .await?
        .expect("a snapshot is stored");
    assert_eq!(snapshot.meta, built.meta);
    assert_eq!(snapshot.snapshot.into_inner(), built.snapshot.into_inner());
    Ok(())
}

/// A new data directory has no Raft state; a saved vote, an entry or a snapshot gives it some,
/// and that is still known after a restart.
#[tokio::test]
async fn has_state_tells_a_fresh_node_from_a_former_member() -> TestResult {
    let dir = TempDir::new()?;
    let (log, _sm) = open_node(dir.path(), 1);
    assert!(!log.has_state()?);
    drop((log, _sm));

    let (mut log, sm) = open_node(dir.path(), 1);
    assert!(!log.has_state()?, "opening alone creates no raft state");
    log.save_vote(&Vote::new(1, 1)).await?;
    assert!(log.has_state()?);
    drop((log, sm));

    let (log, _sm) = open_node(dir.path(), 1);
    assert!(log.has_state()?);

    let other = TempDir::new()?;
    let (mut log, _sm) = open_node(other.path(), 1);
    log.blocking_append([blank(1, 1)]).await?;
    assert!(log.has_state()?);
    Ok(())
}

/// Opening another node's data directory is refused with an error naming the owner, and the
/// file is left byte for byte as it was.
#[tokio::test]
async fn another_nodes_data_is_refused_and_left_untouched() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, sm) = open_node(dir.path(), 1);
    log.save_vote(&Vote::new(1, 1)).await?;
    drop((log, sm));
    let before = std::fs::read(database_file(dir.path()))?;

    let err = open(dir.path(), &identity(2)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::WrongNode {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("belongs to node 1"), "{err}");
    assert_eq!(std::fs::read(database_file(dir.path()))?, before);

    let (mut log, _sm) = open_node(dir.path(), 1);
    assert_eq!(log.read_vote().await?, Some(Vote::new(1, 1)));
    Ok(())
}

/// Opening a data directory of another cluster is refused with an error naming that cluster,
/// and the file is left byte for byte as it was.
#[tokio::test]
async fn another_clusters_data_is_refused_and_left_untouched() -> TestResult {
    let dir = TempDir::new()?;
    drop(open_node(dir.path(), 1));
    let before = std::fs::read(database_file(dir.path()))?;

    let staging = NodeIdentity {
        node_id: 1,
        cluster_name: "staging".to_owned(),
    };
    let err = open(dir.path(), &staging).unwrap_err();
    assert!(matches!(err, StorageError::WrongCluster { .. }), "{err}");
    assert!(
        err.to_string().contains("belongs to cluster \"prod\""),
        "{err}"
    );
    assert_eq!(std::fs::read(database_file(dir.path()))?, before);
    Ok(())
}

/// A database file full of garbage is refused as corrupt, with its path in the message, and
/// is left as it was.
#[tokio::test]
async fn garbage_file_is_refused_as_corrupt_and_left_as_it_was() -> TestResult {
    let dir = TempDir::new()?;
    let path = database_file(dir.path());
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage)?;

    let err = open(dir.path(), &identity(1)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("corrupt or unreadable"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&path)?, garbage);
    Ok(())
}

/// A valid database whose pages were damaged outside redb is refused as corrupt instead of
/// being trusted.
#[tokio::test]
async fn damaged_database_is_refused_as_corrupt() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, sm) = open_node(dir.path(), 1);
    let entries: Vec<Entry> = (1..=200).map(|i| blank(1, i)).collect();
    log.blocking_append(entries).await?;
    drop((log, sm));
    let path = database_file(dir.path());
    let mut bytes = std::fs::read(&path)?;
    // Keep redb's header (the first page) and scramble everything after it.
    for byte in bytes.iter_mut().skip(4096) {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes)?;

    let err = open(dir.path(), &identity(1)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path)?, bytes);
    Ok(())
}

/// A database file as a crash leaves it (copied while open, never shut down) is recovered by
/// redb at open with every committed vote and entry.
#[tokio::test]
async fn file_left_by_a_crash_reopens_with_every_commit() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, sm) = open_node(dir.path(), 1);
    log.save_vote(&Vote::new(2, 1)).await?;
    log.blocking_append((1..=5).map(|i| blank(2, i))).await?;
    let crashed = TempDir::new()?;
    std::fs::copy(database_file(dir.path()), database_file(crashed.path()))?;
    drop((log, sm));
    assert!(
        matches!(
            redb::ReadOnlyDatabase::open(database_file(crashed.path())),
            Err(redb::DatabaseError::RepairAborted)
        ),
        "the copy must look like a file left by a crash"
    );

    let (mut log, _sm) = open_node(crashed.path(), 1);
    assert_eq!(log.read_vote().await?, Some(Vote::new(2, 1)));
    assert_eq!(log.try_get_log_entries(..).await?.len(), 5);
    Ok(())
}

/// Data written by a newer storage format is refused as unreadable and left as it was.
#[tokio::test]
async fn newer_format_version_is_refused_and_left_untouched() -> TestResult {
    let dir = TempDir::new()?;
    drop(open_node(dir.path(), 1));
    let path = database_file(dir.path());
    {
        let database = redb::Database::open(&path)?;
        let txn = database.begin_write()?;
        txn.open_table(META)?
            .insert(key::FORMAT_VERSION, b"2".as_slice())?;
        txn.commit()?;
    }
    let before = std::fs::read(&path)?;

    let err = open(dir.path(), &identity(1)).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unreadable"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path)?, before);
    Ok(())
}

/// A log entry that does not decode makes the open fail as corrupt, naming the entry and the
/// file, and the entry is left in place.
#[tokio::test]
async fn undecodable_log_entry_is_refused_as_corrupt() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, sm) = open_node(dir.path(), 1);
    log.blocking_append([blank(1, 1)]).await?;
    drop((log, sm));
    let path = database_file(dir.path());
    {
        let database = redb::Database::open(&path)?;
        let txn = database.begin_write()?;
        txn.open_table(LOG)?.insert(2, b"{not json".as_slice())?;
        txn.commit()?;
    }

    let err = open(dir.path(), &identity(1)).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("log entry 2"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    let database = redb::Database::open(&path)?;
    let txn = database.begin_read()?;
    let stored = txn.open_table(LOG)?.get(2)?.map(|v| v.value().to_vec());
    assert_eq!(stored.as_deref(), Some(b"{not json".as_slice()));
    Ok(())
}

/// Truncating and purging the log are on disk when they return: a restart sees the shortened
/// log and the purge point.
#[tokio::test]
async fn truncate_and_purge_survive_a_restart() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, sm) = open_node(dir.path(), 1);
    log.blocking_append((1..=10).map(|i| blank(1, i))).await?;
    log.truncate(log_id(1, 8)).await?;
    log.purge(log_id(1, 3)).await?;
    drop((log, sm));

    let (mut log, _sm) = open_node(dir.path(), 1);
    let indexes: Vec<u64> = log
        .try_get_log_entries(..)
        .await?
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, vec![4, 5, 6, 7]);
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    Ok(())
}

/// Applying a batch answers one result per command and the catalog version after the entry;
/// blank and membership entries only move the applied index; the new state is published.
#[tokio::test]
async fn apply_answers_per_command_and_publishes_the_applied_state() -> TestResult {
    let dir = TempDir::new()?;
    let (_log, mut sm) = open_node(dir.path(), 1);
    let applied = sm.catalog().subscribe();
    let responses = sm
        .apply([
            membership(1, 1),
            commands(1, 2, vec![init_cluster("c-1"), init_cluster("c-2")]),
            blank(1, 3),
        ])
        .await?;

    assert_eq!(responses.len(), 3);
    assert!(responses[0].results.is_empty());
    assert_eq!(responses[1].results.len(), 2);
    assert!(
        responses[1].results[0]
            .result
            .as_ref()
            .is_ok_and(|a| a.changed)
    );
    assert!(
        responses[1].results[1].result.is_err(),
        "a second cluster id is refused"
    );
    assert_eq!(responses[1].version, 2);
    assert!(responses[2].results.is_empty());
    assert_eq!(responses[2].version, 2);
    assert_eq!(
        *applied.borrow(),
        AppliedState {
            applied_index: 3,
            catalog_version: 2,
        }
    );
    let (last_applied, last_membership) = sm.applied_state().await?;
    assert_eq!(last_applied, Some(log_id(1, 3)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 1)));
    Ok(())
}

/// The cluster id is mirrored into the meta table when InitCluster is applied, so it is known
/// after a restart even before any entry is re-applied.
#[tokio::test]
async fn cluster_id_is_mirrored_on_disk_when_applied() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open_node(dir.path(), 1);
    assert_eq!(sm.cluster_id(), None);
    append_and_apply(
        &mut log,
        &mut sm,
        vec![commands(1, 1, vec![init_cluster("c-42")])],
    )
    .await?;
    assert_eq!(sm.cluster_id(), Some("c-42"));
    drop((log, sm));

    let (_log, sm) = open_node(dir.path(), 1);
    assert_eq!(sm.cluster_id(), Some("c-42"));
    assert_eq!(
        sm.catalog().applied(),
        AppliedState::default(),
        "nothing re-applied yet"
    );
    Ok(())
}

/// After a restart the state machine holds the catalog of the last stored snapshot, with its
/// applied index, catalog version and membership, before any entry is re-applied.
#[tokio::test]
async fn state_machine_is_rebuilt_from_the_snapshot_on_reopen() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open_node(dir.path(), 1);
    let entries = vec![
        membership(1, 1),
        commands(1, 2, vec![init_cluster("c-7"), register("web", 1)]),
        commands(1, 3, vec![register("web", 2), register("api", 3)]),
        blank(2, 4),
    ];
    append_and_apply(&mut log, &mut sm, entries).await?;
    let expected = sm.catalog().read(Clone::clone);
    sm.get_snapshot_builder().await.build_snapshot().await?;
    // Applied after the snapshot: not part of the rebuilt state until openraft re-applies it.
    append_and_apply(
        &mut log,
        &mut sm,
        vec![commands(2, 5, vec![register("db", 4)])],
    )
    .await?;
    drop((log, sm));

    let (_log, mut sm) = open_node(dir.path(), 1);
    assert_eq!(sm.catalog().read(Clone::clone), expected);
    assert_eq!(
        sm.catalog().applied(),
        AppliedState {
            applied_index: 4,
            catalog_version: 3,
        }
    );
    let (last_applied, last_membership) = sm.applied_state().await?;
    assert_eq!(last_applied, Some(log_id(2, 4)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 1)));
    assert_eq!(sm.cluster_id(), Some("c-7"));
    Ok(())
}

/// The record of applied requests is part of the snapshot: a replica restarted from it still
/// answers a retry of a request applied before the snapshot from the record, without applying
/// it again.
#[tokio::test]
async fn request_record_survives_a_snapshot_and_a_restart() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open_node(dir.path(), 1);
    let request = RequestId {
        client: "writer-1".to_owned(),
        sequence: 1,
    };
    let first = Entry {
        log_id: log_id(1, 2),
        payload: EntryPayload::Normal(CommandBatch::new([(
            Some(request.clone()),
            register("web", 1),
        )])),
    };
    append_and_apply(&mut log, &mut sm, vec![membership(1, 1), first]).await?;
    sm.get_snapshot_builder().await.build_snapshot().await?;
    drop((log, sm));

    let (_log, mut sm) = open_node(dir.path(), 1);
    let retry = Entry {
        log_id: log_id(1, 3),
        payload: EntryPayload::Normal(CommandBatch::new([(Some(request), register("web", 1))])),
    };
    let responses = sm.apply([retry]).await?;
    let outcome = &responses[0].results[0];
    assert!(outcome.duplicate, "answered from the record: {outcome:?}");
    assert_eq!(outcome.version, 2);
    Ok(())
}

/// A snapshot installed from a leader replaces the follower's catalog at once and is what the
/// follower restarts from.
#[tokio::test]
async fn installed_snapshot_replaces_the_catalog_and_survives_a_restart() -> TestResult {
    let leader_dir = TempDir::new()?;
    let (mut leader_log, mut leader) = open_node(leader_dir.path(), 1);
    let entries = vec![
        membership(1, 1),
        commands(1, 2, vec![init_cluster("c-9"), register("web", 1)]),
    ];
    append_and_apply(&mut leader_log, &mut leader, entries).await?;
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await?;
    let expected = leader.catalog().read(Clone::clone);

    let follower_dir = TempDir::new()?;
    let (log, mut follower) = open_node(follower_dir.path(), 2);
    let published = follower.catalog().subscribe();
    let mut received = follower.begin_receiving_snapshot().await?;
    *received = *snapshot.snapshot;
    follower.install_snapshot(&snapshot.meta, received).await?;
    assert_eq!(follower.catalog().read(Clone::clone), expected);
    assert_eq!(published.borrow().applied_index, 2);
    assert_eq!(follower.cluster_id(), Some("c-9"));
    drop((log, follower));

    let (log, mut follower) = open_node(follower_dir.path(), 2);
    assert!(log.has_state()?);
    assert_eq!(follower.catalog().read(Clone::clone), expected);
    let current = follower
        .get_current_snapshot()
        .await?
        .expect("the installed snapshot");
    assert_eq!(current.meta, snapshot.meta);
    Ok(())
}

/// A snapshot whose data disagrees with its metadata is refused and the state machine is left
/// as it was.
#[tokio::test]
async fn snapshot_not_matching_its_metadata_is_refused() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, mut sm) = open_node(dir.path(), 1);
    append_and_apply(&mut log, &mut sm, vec![membership(1, 1), blank(1, 2)]).await?;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await?;

    let other_dir = TempDir::new()?;
    let (_other_log, mut other) = open_node(other_dir.path(), 2);
    let mut meta = snapshot.meta.clone();
    meta.last_log_id = Some(log_id(1, 9));
    let result = other.install_snapshot(&meta, snapshot.snapshot).await;
    assert!(result.is_err());
    assert_eq!(other.applied_state().await?.0, None);
    assert!(other.get_current_snapshot().await?.is_none());
    Ok(())
}

/// The data directory is created when missing, and a file left empty by a crash during
/// creation is initialised rather than refused.
#[tokio::test]
async fn missing_directory_and_empty_file_are_initialised() -> TestResult {
    let dir = TempDir::new()?;
    let nested = dir.path().join("a/b/raft");
    drop(open_node(&nested, 1));
    assert!(database_file(&nested).is_file());

    let other = TempDir::new()?;
    std::fs::write(database_file(other.path()), b"")?;
    let (log, _sm) = open_node(other.path(), 1);
    assert!(!log.has_state()?);
    Ok(())
}

/// Opening a data directory that this process already has open is refused as in use, not
/// reported as corruption.
#[tokio::test]
async fn data_in_use_is_refused() -> TestResult {
    let dir = TempDir::new()?;
    let _open = open_node(dir.path(), 1);
    let err = open(dir.path(), &identity(1)).unwrap_err();
    assert!(matches!(err, StorageError::InUse { .. }), "{err}");
    Ok(())
}

/// Limited reads return a non-empty prefix of the requested range, in order.
#[tokio::test]
async fn limited_reads_return_a_prefix_of_the_range() -> TestResult {
    let dir = TempDir::new()?;
    let (mut log, _sm) = open_node(dir.path(), 1);
    log.blocking_append((1..=20).map(|i| blank(1, i))).await?;
    let mut reader = log.get_log_reader().await;
    let got = reader.limited_get_log_entries(5, 9).await?;
    let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, vec![5, 6, 7, 8]);
    Ok(())
}
