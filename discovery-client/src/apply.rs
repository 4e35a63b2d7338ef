//! Deciding what a response does to the current config: a plain function over owned data, so
//! the rules that keep a proxy from going backwards are tested without a network.
//!
//! The rules:
//! - a response is converted, applied to a copy and validated as a whole; the current config is
//!   never modified in place, so a rejection leaves it exactly as it was;
//! - within one cluster, a version lower than the current one is refused (never backwards);
//! - a delta applies only on top of a version the client has (`from_version` ≤ current): its
//!   upserts replace whole services and its removals are idempotent, so replaying changes the
//!   client already has is harmless, but skipping some is not;
//! - another cluster id means the cluster was rebuilt and its versions restarted: only a
//!   snapshot can take the client there.

use netting_proto::discovery::v1 as proto;
use thiserror::Error;

use crate::convert::{Change, InvalidResponse, Update};
use crate::types::ProxyConfig;

/// Checks a config before it is published; `Err` carries the reason sent in the NACK.
pub type Validator =
    std::sync::Arc<dyn Fn(&ProxyConfig) -> Result<(), String> + Send + Sync + 'static>;

/// Why a response was NACKed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum Rejection {
    #[error(transparent)]
    Invalid(#[from] InvalidResponse),
    #[error(
        "version goes backwards: {version} is older than the applied {current} of cluster {cluster_id}"
    )]
    Backwards {
        version: u64,
        current: u64,
        cluster_id: String,
    },
    #[error("delta from version {from_version}, but the client has {current}")]
    MissingBase { from_version: u64, current: u64 },
    #[error(
        "delta for cluster {cluster_id} but the client is at cluster {current:?}; a new cluster must send a snapshot"
    )]
    ForeignDelta { cluster_id: String, current: String },
    #[error("rejected by the proxy: {0}")]
    Validator(String),
}

impl Rejection {
    /// Whether the replica's idea of what the client has is wrong, so that every later delta
    /// on this stream would be too: the only cure is a new hello.
    pub(crate) fn needs_resync(&self) -> bool {
        matches!(self, Self::MissingBase { .. } | Self::ForeignDelta { .. })
    }
}

/// The config after `response`, or why the response cannot be used.
pub(crate) fn apply(
    current: &ProxyConfig,
    response: proto::DiscoveryResponse,
    validator: Option<&Validator>,
) -> Result<ProxyConfig, Rejection> {
    let update = Update::try_from(response)?;
    let same_cluster = update.cluster_id == current.cluster_id;
    if same_cluster && update.version < current.version {
        return Err(Rejection::Backwards {
            version: update.version,
            current: current.version,
            cluster_id: update.cluster_id,
        });
    }
    let next = match update.change {
        Change::Snapshot(services) => ProxyConfig {
            version: update.version,
            cluster_id: update.cluster_id,
            services,
        },
        Change::Delta { .. } if !same_cluster => {
            return Err(Rejection::ForeignDelta {
                cluster_id: update.cluster_id,
                current: current.cluster_id.clone(),
            });
        }
        Change::Delta {
            from_version,
            upserted,
            removed,
        } => {
            if from_version > current.version {
                return Err(Rejection::MissingBase {
                    from_version,
                    current: current.version,
                });
            }
            let mut services = current.services.clone();
            for name in &removed {
                services.remove(name);
            }
            services.extend(upserted);
            ProxyConfig {
                version: update.version,
                cluster_id: update.cluster_id,
                services,
            }
        }
    };
    if let Some(validator) = validator {
        validator(&next).map_err(Rejection::Validator)?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
