//! Netting's wire contract.
//!
//! The `.proto` files under `proto/` are the only contract between Netting processes; this
//! crate holds them, the code tonic and prost generate from them, [`transport`]: the TCP
//! settings every Netting gRPC connection uses, and [`retry`]: which failed calls a client
//! should try on another replica. Every other crate converts these types to its
//! own domain types at its edge.

pub mod retry;
pub mod transport;

#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("netting.catalog.v1");
    }
}

#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("netting.raft.v1");
    }
}

#[allow(missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("netting.discovery.v1");
    }
}
