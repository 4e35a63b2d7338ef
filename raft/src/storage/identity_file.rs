//! A small side file, `identity.json`, naming the node, cluster and storage format a data
//! directory belongs to. It is checked before the database is opened: opening a database left
//! by a crash makes redb repair it (a write), and a directory that is about to be refused must
//! not be written to at all.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StorageError;
use super::{NodeIdentity, STORAGE_FORMAT_VERSION};
use crate::types::NodeId;

pub(crate) const IDENTITY_FILE: &str = "identity.json";

#[derive(Debug, Serialize, Deserialize)]
struct IdentityRecord {
    format_version: u32,
    node_id: NodeId,
    cluster_name: String,
}

pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// Refuses a directory whose identity file names another node, cluster or format. A missing
/// file is not a refusal: the database's own record is checked next.
pub(crate) fn check(data_dir: &Path, identity: &NodeIdentity) -> Result<(), StorageError> {
    let path = path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(super::error::corrupt(&path, e)),
    };
    let record: IdentityRecord =
        serde_json::from_slice(&bytes).map_err(|e| super::error::corrupt(&path, e))?;
    if record.format_version != STORAGE_FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat {
            path,
            found: record.format_version,
            supported: STORAGE_FORMAT_VERSION,
        });
    }
    if record.node_id != identity.node_id {
        return Err(StorageError::WrongNode {
            path,
            found: record.node_id,
            expected: identity.node_id,
        });
    }
    if record.cluster_name != identity.cluster_name {
        return Err(StorageError::WrongCluster {
            path,
            found: record.cluster_name,
            expected: identity.cluster_name.clone(),
        });
    }
    Ok(())
}

/// Writes the identity file atomically (temporary file, fsync, rename, fsync of the
/// directory) unless it already exists.
pub(crate) fn ensure(data_dir: &Path, identity: &NodeIdentity) -> Result<(), StorageError> {
    let target = path(data_dir);
    if target.exists() {
        return Ok(());
    }
    let record = IdentityRecord {
        format_version: STORAGE_FORMAT_VERSION,
        node_id: identity.node_id,
        cluster_name: identity.cluster_name.clone(),
    };
    let io = |source| StorageError::DataDir {
        path: target.clone(),
        source,
    };
    let bytes =
        serde_json::to_vec_pretty(&record).map_err(|e| super::error::corrupt(&target, e))?;
    let temporary = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = fs::File::create(&temporary).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, &target).map_err(io)?;
    fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}
