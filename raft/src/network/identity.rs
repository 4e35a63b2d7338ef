//! Which cluster a replica belongs to, stamped on every Raft request and checked on arrival, so
//! that a replica never votes for or replicates from a replica of another cluster (a copied
//! volume, a second release in the same namespace, an address reused by another cluster).

use thiserror::Error;
use tokio::sync::watch;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::catalog_handle::CatalogHandle;

/// gRPC metadata key carrying the sender's cluster name (from configuration).
pub const CLUSTER_NAME_HEADER: &str = "netting-cluster-name";
/// gRPC metadata key carrying the sender's cluster id, once it knows it.
pub const CLUSTER_ID_HEADER: &str = "netting-cluster-id";

/// This replica's cluster: the configured name and the id fixed at bootstrap.
///
/// The id is a `watch` receiver because a replica learns it only when it applies the
/// bootstrap entry, after it has started serving Raft: whoever applies that entry publishes
/// the id, and every request and check reads the latest value without locking.
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    name: String,
    name_value: AsciiMetadataValue,
    id: watch::Receiver<Option<String>>,
}

/// A cluster name or id that cannot travel in gRPC metadata.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum InvalidClusterIdentity {
    #[error("cluster name is empty")]
    EmptyName,
    #[error("cluster name `{0}` is not printable ASCII")]
    Name(String),
    #[error("cluster id `{0}` is not printable ASCII")]
    Id(String),
}

/// Why an incoming Raft request was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ClusterMismatch {
    #[error("request carries no readable {CLUSTER_NAME_HEADER}; this is cluster `{ours}`")]
    NoName { ours: String },
    #[error("request from cluster `{theirs}`, but this is cluster `{ours}`")]
    Name { theirs: String, ours: String },
    #[error(
        "request from cluster `{name}` with id `{theirs}`, but this is cluster `{name}` with id `{ours}`"
    )]
    Id {
        name: String,
        theirs: String,
        ours: String,
    },
}

impl From<ClusterMismatch> for tonic::Status {
    fn from(err: ClusterMismatch) -> Self {
        tonic::Status::failed_precondition(err.to_string())
    }
}

impl ClusterIdentity {
    /// `id` yields `None` until the cluster id is known.
    pub fn new(
        name: impl Into<String>,
        id: watch::Receiver<Option<String>>,
    ) -> Result<Self, InvalidClusterIdentity> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidClusterIdentity::EmptyName);
        }
        let name_value = AsciiMetadataValue::try_from(name.as_str())
            .map_err(|_| InvalidClusterIdentity::Name(name.clone()))?;
        Ok(Self {
            name,
            name_value,
            id,
        })
    }

    /// An identity whose id never changes (known at start-up, or never known).
    pub fn fixed(
        name: impl Into<String>,
        id: Option<String>,
    ) -> Result<Self, InvalidClusterIdentity> {
        // A watch receiver keeps the last value after its sender is gone.
        let (_, rx) = watch::channel(id);
        Self::new(name, rx)
    }

    /// An identity whose id is the applied catalog's cluster id: `None` until this replica
    /// applies the bootstrap entry (or installs a snapshot holding it), then that id.
    ///
    /// Must be called inside a Tokio runtime while the id is unknown: a small task watches the
    /// applied state and publishes the id. The id is fixed once per cluster, so the task ends
    /// as soon as it is known, or when every clone of the identity is gone.
    pub fn following_catalog(
        name: impl Into<String>,
        catalog: CatalogHandle,
    ) -> Result<Self, InvalidClusterIdentity> {
        // Subscribe before the first read, so an id applied in between is not missed.
        let mut applied = catalog.subscribe();
        let read = move || catalog.read(|c| c.cluster_id().map(str::to_owned));
        let (tx, rx) = watch::channel(read());
        let identity = Self::new(name, rx)?;
        if tx.borrow().is_none() {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = applied.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                    }
                    if let Some(id) = read() {
                        tx.send_replace(Some(id));
                        return;
                    }
                }
            });
        }
        Ok(identity)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster id, if known yet.
    pub fn id(&self) -> Option<String> {
        self.id.borrow().clone()
    }

    /// Adds this replica's cluster name and, when known, its id to outgoing metadata.
    pub fn stamp(&self, metadata: &mut MetadataMap) -> Result<(), InvalidClusterIdentity> {
        metadata.insert(CLUSTER_NAME_HEADER, self.name_value.clone());
        if let Some(id) = self.id.borrow().as_deref() {
            let value = AsciiMetadataValue::try_from(id)
                .map_err(|_| InvalidClusterIdentity::Id(id.to_owned()))?;
            metadata.insert(CLUSTER_ID_HEADER, value);
        }
        Ok(())
    }

    /// Accepts a request of this cluster. The ids are compared only when both sides know
    /// theirs: a replica that joins an existing cluster learns the id from the log it is
    /// being sent, so it must accept the leader before it knows it.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), ClusterMismatch> {
        let theirs = metadata
            .get(CLUSTER_NAME_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClusterMismatch::NoName {
                ours: self.name.clone(),
            })?;
        if theirs != self.name {
            return Err(ClusterMismatch::Name {
                theirs: theirs.to_owned(),
                ours: self.name.clone(),
            });
        }
        // An unreadable id is treated like an absent one: the names already match, and an id
        // we cannot read is not evidence of another cluster.
        let their_id = metadata
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok());
        if let (Some(theirs), Some(ours)) = (their_id, self.id.borrow().as_deref())
            && theirs != ours
        {
            return Err(ClusterMismatch::Id {
                name: self.name.clone(),
                theirs: theirs.to_owned(),
                ours: ours.to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::catalog_handle::AppliedState;

    fn stamped(identity: &ClusterIdentity) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        identity.stamp(&mut metadata).unwrap();
        metadata
    }

    /// A request stamped by a replica of the same cluster passes the check.
    #[test]
    fn same_cluster_is_accepted() {
        let ours = ClusterIdentity::fixed("prod", Some("id-1".into())).unwrap();
        let theirs = ClusterIdentity::fixed("prod", Some("id-1".into())).unwrap();
        assert_eq!(ours.check(&stamped(&theirs)), Ok(()));
    }

    /// A different cluster name is refused, naming both clusters.
    #[test]
    fn other_name_is_refused() {
        let ours = ClusterIdentity::fixed("prod", None).unwrap();
        let theirs = ClusterIdentity::fixed("staging", None).unwrap();
        let err = ours.check(&stamped(&theirs)).unwrap_err();
        assert_eq!(
            err,
            ClusterMismatch::Name {
                theirs: "staging".into(),
                ours: "prod".into()
            }
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("`staging`") && status.message().contains("`prod`"));
    }

    /// Same name but another known id (a cluster rebuilt from nothing) is refused.
    #[test]
    fn other_id_is_refused() {
        let ours = ClusterIdentity::fixed("prod", Some("id-1".into())).unwrap();
        let theirs = ClusterIdentity::fixed("prod", Some("id-2".into())).unwrap();
        assert!(matches!(
            ours.check(&stamped(&theirs)),
            Err(ClusterMismatch::Id { .. })
        ));
    }

    /// An id known on only one side is no reason to refuse: a joining replica learns it later.
    #[test]
    fn id_known_on_one_side_is_accepted() {
        let with_id = ClusterIdentity::fixed("prod", Some("id-1".into())).unwrap();
        let without = ClusterIdentity::fixed("prod", None).unwrap();
        assert_eq!(with_id.check(&stamped(&without)), Ok(()));
        assert_eq!(without.check(&stamped(&with_id)), Ok(()));
    }

    /// A request without a cluster name is refused.
    #[test]
    fn missing_name_is_refused() {
        let ours = ClusterIdentity::fixed("prod", None).unwrap();
        assert!(matches!(
            ours.check(&MetadataMap::new()),
            Err(ClusterMismatch::NoName { .. })
        ));
    }

    /// The id published after start-up is the one stamped and checked from then on.
    #[test]
    fn id_learned_later_is_used() {
        let (tx, rx) = watch::channel(None);
        let ours = ClusterIdentity::new("prod", rx).unwrap();
        assert!(stamped(&ours).get(CLUSTER_ID_HEADER).is_none());
        tx.send_replace(Some("id-9".into()));
        assert_eq!(stamped(&ours).get(CLUSTER_ID_HEADER).unwrap(), "id-9");
        let other = ClusterIdentity::fixed("prod", Some("id-1".into())).unwrap();
        assert!(ours.check(&stamped(&other)).is_err());
    }

    /// An identity following the catalog picks up the cluster id once it is applied.
    #[tokio::test]
    async fn following_catalog_learns_the_id() {
        let catalog = CatalogHandle::default();
        let identity = ClusterIdentity::following_catalog("prod", catalog.clone()).unwrap();
        assert_eq!(identity.id(), None);

        let command = crate::catalog::CatalogCommand::InitCluster {
            cluster_id: "id-7".into(),
        };
        catalog.write_guard().apply(3, &command).unwrap();
        catalog.publish(AppliedState {
            applied_index: 3,
            catalog_version: 3,
        });

        let mut id = identity.id.clone();
        let learned = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            id.wait_for(Option::is_some),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert_eq!(learned.as_deref(), Some("id-7"));
        assert_eq!(identity.id().as_deref(), Some("id-7"));
    }

    /// Names that cannot be sent as metadata are rejected when the identity is built.
    #[test]
    fn unsendable_name_is_rejected() {
        assert_eq!(
            ClusterIdentity::fixed("", None).unwrap_err(),
            InvalidClusterIdentity::EmptyName
        );
        assert!(matches!(
            ClusterIdentity::fixed("prod\n", None),
            Err(InvalidClusterIdentity::Name(_))
        ));
    }
}
