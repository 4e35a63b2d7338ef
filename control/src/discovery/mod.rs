//! Configuration distribution to sidecars: the synchronous decisions, tested without a
//! runtime. The actors (`actors::sidecar_session`, `actors::config_pusher`) and the gRPC
//! service (`grpc::discovery`) are the shell around them.
//!
//! - [`hello`]: a sidecar's first message, validated into its identity, subscription and
//!   resume point.
//! - [`view`]: what a subscription sees of the catalog — as a snapshot, or as a delta since a
//!   version — and a fingerprint of what a sidecar uses of a service.
//! - [`debounce`]: when bursts of catalog changes are pushed.

pub mod debounce;
pub mod hello;
pub mod view;
