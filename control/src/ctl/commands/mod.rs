//! One module per command group. Each turns its arguments into requests, asks the replicas
//! through [`Client`](super::client::Client), and renders view structs; the conversions and
//! renderings are plain functions tested without a network.

pub mod catalog;
pub mod config;
pub mod members;
pub mod sessions;
pub mod status;
