//! The messages between the config pusher, the sidecar sessions and the gRPC stream of each
//! session, in one place so that neither actor depends on the other.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use netting_raft::catalog::LogIndex;

use crate::discovery::hello::Subscription;
use crate::discovery::session::{Change, Close, Response};

pub use crate::discovery::session::SessionId;

/// What a session hands to its stream. Boxed because the channel allocates its slots in
/// blocks of 32 whatever its capacity: unboxed, each session would carry kilobytes of slots.
pub type Outbound = Box<Outgoing>;

/// One item for the stream: a response, or the end of the stream.
#[derive(Debug)]
pub enum Outgoing {
    Response(Response),
    Close(Close),
}

/// Tells a session that the catalog changed what it may see.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PushUpdate(pub Change);

/// The sidecar acknowledged a response.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SidecarAck {
    pub version: LogIndex,
    pub nonce: String,
}

/// The sidecar refused a response; it keeps its last good configuration.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SidecarNack {
    pub version: LogIndex,
    pub nonce: String,
    pub error: String,
}

/// The inbound stream ended: the sidecar went away, or broke the protocol (then `violation`
/// says how, and the sidecar is told before the stream closes).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StreamEnded {
    pub violation: Option<String>,
}

/// Asks a session to describe itself.
#[derive(Debug, Message)]
#[rtype(result = "SessionInfo")]
pub struct DescribeSession;

/// A session as operators see it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub pod: String,
    pub namespace: String,
    pub proxy_version: String,
    pub acked_version: Option<LogIndex>,
    pub sent_version: Option<LogIndex>,
    pub connected_for: Duration,
    pub nacks: u32,
    pub subscription: Arc<Subscription>,
}

/// A session has started and wants updates.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionOpened {
    pub id: SessionId,
    pub namespace: String,
    pub pod: String,
    pub subscription: Arc<Subscription>,
    pub push: Recipient<PushUpdate>,
    pub describe: Recipient<DescribeSession>,
}

/// A session has ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionClosed {
    pub id: SessionId,
}

/// Describes every session of this replica.
#[derive(Debug, Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct ListSessions;

/// Describes the session of one pod, if it is connected here.
#[derive(Debug, Message)]
#[rtype(result = "Option<SessionInfo>")]
pub struct FindSession {
    pub namespace: String,
    pub pod: String,
}
