//! Configuration distribution to sidecars: the synchronous decisions, tested without a
//! runtime. The actors (`actors::sidecar_session`, `actors::config_pusher`) and the gRPC
//! service (`grpc::discovery`) are the shell around them.
//!
//! - [`hello`]: a sidecar's first message, validated into its identity, subscription and
//!   resume point.
//! - [`view`]: what a subscription sees of the catalog — as a snapshot, or as a delta since a
//!   version — as [`view::ServiceView`]s.
//! - [`fingerprint`]: a hash of what sidecars use of each service, built from the same view
//!   values and kept at the cost of the endpoints that changed.
//! - [`session`]: the protocol of one stream (the response in flight, the pending flag, the
//!   acknowledgement timeout) as decisions the session actor carries out.
//! - [`push_plan`]: which sessions a catalog change reaches, and why.
//! - [`debounce`]: when bursts of catalog changes are pushed.
//! - [`applied_times`]: when each version was applied, for the commit-to-ACK histogram.

pub mod applied_times;
pub mod debounce;
pub mod fingerprint;
pub mod hello;
pub mod push_plan;
pub mod session;
#[cfg(test)]
mod test_catalog;
pub mod view;
