//! Request ids for catalog writes: checking the one a client sent, and giving one to a write
//! that came without, so that the replicas' own retries (a follower retrying a forwarded write
//! on a new leader) are applied at most once.

use std::sync::atomic::{AtomicU64, Ordering};

use netting_proto::catalog::v1 as pb;
use netting_raft::NodeId;
use netting_raft::catalog::RequestId;

/// The ids this replica gives. The client part is new for every process, so a restarted
/// replica never reuses a number its earlier life gave to another write.
#[derive(Debug)]
pub struct RequestIds {
    client: String,
    last: AtomicU64,
}

impl RequestIds {
    pub fn new(node_id: NodeId) -> Self {
        let process = uuid::Uuid::new_v4().simple().to_string();
        Self {
            client: format!("replica-{node_id}-{}", &process[..12]),
            last: AtomicU64::new(0),
        }
    }

    /// A fresh id, never given before by this process.
    pub fn next(&self) -> RequestId {
        RequestId {
            client: self.client.clone(),
            sequence: self.last.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

/// The catalog write requests, which all may carry a request id.
pub trait IdentifiedWrite: Clone {
    fn request_id(&self) -> Option<&pb::RequestId>;
    fn set_request_id(&mut self, id: pb::RequestId);
}

impl IdentifiedWrite for pb::RegisterRequest {
    fn request_id(&self) -> Option<&pb::RequestId> {
        self.request_id.as_ref()
    }

    fn set_request_id(&mut self, id: pb::RequestId) {
        self.request_id = Some(id);
    }
}

impl IdentifiedWrite for pb::DeregisterRequest {
    fn request_id(&self) -> Option<&pb::RequestId> {
        self.request_id.as_ref()
    }

    fn set_request_id(&mut self, id: pb::RequestId) {
        self.request_id = Some(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids of one process share a client and never repeat; two processes of the same node
    /// never share a client.
    #[test]
    fn ids_are_unique_per_process() {
        let ids = RequestIds::new(2);
        let (a, b) = (ids.next(), ids.next());
        assert_eq!(a.client, b.client);
        assert_eq!((a.sequence, b.sequence), (1, 2));
        assert!(a.client.starts_with("replica-2-"));
        assert_ne!(RequestIds::new(2).next().client, a.client);
    }
}
