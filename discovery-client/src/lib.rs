//! The sidecar side of Netting's discovery protocol (`netting.discovery.v1.Discovery/Stream`).
//!
//! The proxy spawns one client and reads its configuration from a `watch` channel:
//!
//! ```no_run
//! # async fn example() -> Result<(), netting_discovery_client::InvalidConfig> {
//! use netting_discovery_client::{ClientConfig, DiscoveryClient, Identity, Subscription};
//!
//! let config = ClientConfig::new(
//!     ["netting-0.netting:7100", "netting-1.netting:7100", "netting-2.netting:7100"],
//!     Identity::new("web-6d5f-x2x9", "shop").service_account("web"),
//!     Subscription::new().namespace("shop").service("payments", "api"),
//! );
//! let client = DiscoveryClient::spawn(config, None)?;
//! let mut routes = client.config();
//! while routes.changed().await.is_ok() {
//!     let current = routes.borrow_and_update().clone();
//!     // rebuild the routing table from `current` (an `Arc<ProxyConfig>`)
//! #   let _ = current;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The client connects to any replica (a random one first, then the next in the list), says
//! who it is, what it subscribes to and the version it has, and then applies every response,
//! answering ACK or NACK. When a stream ends it reconnects with exponential backoff and full
//! jitter, or at once when a lagging replica asks it to try another.
//!
//! Invariants it keeps:
//! - **Atomic updates.** A response is converted, applied to a copy and validated (by the
//!   protocol rules and the proxy's own validator) as a whole; the config channel only ever
//!   holds complete, accepted configs, and an ACK is sent only after publishing.
//! - **Never backwards.** Within a cluster the published version never decreases, across
//!   replicas and reconnects; a lower version is NACKed. A different cluster id (a cluster
//!   rebuilt from nothing) is accepted only as a snapshot.
//! - **No gaps.** A delta is applied only on top of a version the client has; a delta from a
//!   version it lacks is NACKed and the client reconnects to resynchronise.
//! - **Static stability.** While no replica is reachable the last good config stays published,
//!   and each hello resumes from it.

#![forbid(unsafe_code)]

mod apply;
mod backoff;
mod client;
mod config;
mod convert;
mod metrics;
mod types;

pub use apply::Validator;
pub use client::{ClientHandle, ConnectionStatus, DiscoveryClient};
pub use config::{ClientConfig, Identity, InvalidConfig, Subscription};
pub use metrics::describe_metrics;
pub use types::{
    Endpoint, LoadBalancer, Policy, Port, Protocol, ProxyConfig, ServiceConfig, ServiceName,
};
