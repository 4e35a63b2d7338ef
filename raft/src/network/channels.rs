//! One gRPC channel per peer, shared by the Raft network and by the control plane's
//! forwarding of writes to the leader.
//!
//! A tonic `Channel` is a multiplexed HTTP/2 connection that reconnects on its own; creating
//! one per RPC (as openraft's gRPC example does) costs a TCP and HTTP/2 handshake per
//! heartbeat. Channels are created lazily, so building one never blocks and an unreachable
//! peer shows up as an error of the first RPC, not of the cache.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netting_proto::transport::TunedConnector;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use crate::types::NodeId;

/// How peer connections are set up.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Bound on establishing the TCP connection. Short on a LAN: a peer that does not answer
    /// within it is reported unreachable and openraft backs off.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 PINGs, which find a dead peer (or a silently dropped NAT/conntrack
    /// entry) on an idle connection before an RPC has to.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

/// A peer address that cannot be turned into a gRPC endpoint.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid peer address `{addr}`: {reason}")]
pub struct InvalidPeerAddress {
    addr: String,
    reason: String,
}

impl InvalidPeerAddress {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn new(addr: &str, reason: impl Into<String>) -> Self {
        Self {
            addr: addr.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Cache of one lazily connected channel per peer address. Share it with `Arc`.
#[derive(Debug)]
pub struct PeerChannels {
    config: ChannelConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by the normalised URI, so `host:port` and `http://host:port` share a channel.
    by_uri: HashMap<String, Channel>,
    /// The address each Raft member was last reached at, to drop the channel of an address a
    /// member no longer uses.
    node_uri: HashMap<NodeId, String>,
}

impl PeerChannels {
    pub fn new(config: ChannelConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The channel to `addr` (`host:port` or `http://host:port`), created on first use.
    ///
    /// Must be called inside a Tokio runtime: a new channel spawns its connection task.
    pub fn get(&self, addr: &str) -> Result<Channel, InvalidPeerAddress> {
        let uri = normalise(addr)?;
        let mut inner = self.lock();
        self.channel_for(&mut inner, uri)
    }

    /// The channel to Raft member `node` at `addr`. When the member's address changed since
    /// the last call, the channel to its old address is dropped (unless another member still
    /// uses it), so the cache holds no connection to an address nobody uses any more.
    pub fn get_for_node(&self, node: NodeId, addr: &str) -> Result<Channel, InvalidPeerAddress> {
        let uri = normalise(addr)?;
        let mut inner = self.lock();
        if let Some(old) = inner.node_uri.insert(node, uri.clone())
            && old != uri
            && !inner.node_uri.values().any(|u| *u == old)
        {
            tracing::info!(node, old = %old, new = %uri, "raft peer moved; dropping its old channel");
            inner.by_uri.remove(&old);
        }
        self.channel_for(&mut inner, uri)
    }

    /// Number of cached channels.
    pub fn len(&self) -> usize {
        self.lock().by_uri.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn channel_for(&self, inner: &mut Inner, uri: String) -> Result<Channel, InvalidPeerAddress> {
        if let Some(channel) = inner.by_uri.get(&uri) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| InvalidPeerAddress::new(&uri, e.to_string()))?
            .connect_timeout(self.config.connect_timeout)
            .http2_keep_alive_interval(self.config.keepalive_interval)
            .keep_alive_timeout(self.config.keepalive_timeout)
            // Keep pinging while idle, so a follower that has been quiet still has a live
            // connection the moment it must vote.
            .keep_alive_while_idle(true);
        // Raft messages are small and latency-bound (heartbeats, votes): no Nagle, and linear
        // retransmission timeouts so a healed partition carries heartbeats again at once.
        let channel = endpoint.connect_with_connector_lazy(TunedConnector::new());
        inner.by_uri.insert(uri, channel.clone());
        Ok(channel)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps are consistent between any two statements that touch them, so a panic
        // elsewhere while the lock was held leaves nothing half-done; keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for PeerChannels {
    fn default() -> Self {
        Self::new(ChannelConfig::default())
    }
}

/// `host:port` becomes `http://host:port`. Only plaintext HTTP/2 is supported between
/// replicas for now, so an explicit other scheme is an error rather than a connection that
/// fails at every RPC.
fn normalise(addr: &str) -> Result<String, InvalidPeerAddress> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(InvalidPeerAddress::new(addr, "empty"));
    }
    let uri = match addr.split_once("://") {
        None => format!("http://{addr}"),
        Some(("http", _)) => addr.to_owned(),
        Some((scheme, _)) => {
            return Err(InvalidPeerAddress::new(
                addr,
                format!("scheme `{scheme}` is not supported, use host:port"),
            ));
        }
    };
    let parsed = uri
        .parse::<tonic::transport::Uri>()
        .map_err(|e| InvalidPeerAddress::new(addr, e.to_string()))?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(InvalidPeerAddress::new(addr, "no host"));
    }
    if !matches!(parsed.path(), "" | "/") {
        return Err(InvalidPeerAddress::new(addr, "a peer address has no path"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Asking twice for the same peer, in either spelling, creates one channel.
    #[tokio::test]
    async fn one_channel_per_address() {
        let channels = PeerChannels::default();
        channels.get("10.0.0.1:7000").unwrap();
        channels.get("http://10.0.0.1:7000").unwrap();
        channels.get_for_node(1, "10.0.0.1:7000").unwrap();
        assert_eq!(channels.len(), 1);
        channels.get("10.0.0.2:7000").unwrap();
        assert_eq!(channels.len(), 2);
    }

    /// When a member moves, the channel to its old address is dropped and a new one is made.
    #[tokio::test]
    async fn moved_member_replaces_its_channel() {
        let channels = PeerChannels::default();
        channels.get_for_node(1, "10.0.0.1:7000").unwrap();
        channels.get_for_node(1, "10.0.0.9:7000").unwrap();
        assert_eq!(channels.len(), 1);
        assert!(channels.lock().by_uri.contains_key("http://10.0.0.9:7000"));
    }

    /// An old address still used by another member keeps its channel.
    #[tokio::test]
    async fn shared_address_is_kept() {
        let channels = PeerChannels::default();
        channels.get_for_node(1, "10.0.0.1:7000").unwrap();
        channels.get_for_node(2, "10.0.0.1:7000").unwrap();
        channels.get_for_node(1, "10.0.0.9:7000").unwrap();
        assert_eq!(channels.len(), 2);
    }

    /// Addresses that cannot name a plaintext gRPC peer are rejected without caching anything.
    #[tokio::test]
    async fn invalid_addresses_are_rejected() {
        let channels = PeerChannels::default();
        for addr in [
            "",
            "  ",
            "https://10.0.0.1:7000",
            "10.0.0.1:7000/x",
            "bad host:1",
            "http://",
        ] {
            let err = channels.get(addr).unwrap_err();
            assert_eq!(err.addr(), addr.trim(), "{err}");
        }
        assert!(channels.is_empty());
    }
}
