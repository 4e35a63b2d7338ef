//! A Netting control-plane replica and its command-line client.
//!
//! - [`config`]: flags parsed once into a validated configuration.
//! - [`node`]: wires one replica together and runs it; [`bootstrap`] decides whether a starting
//!   replica resumes, creates the cluster or joins it.
//! - [`actors`]: the actix actors (catalog writer, catalog-file watcher).
//! - [`grpc`]: the catalog and cluster gRPC services and leader forwarding.
//! - [`catalog_file`]: parsing the catalog file and diffing it against the catalog.
//! - [`admin`]: the admin HTTP server and metrics.
//! - [`ctl`]: the `nettingctl` client.
//! - [`dev`]: `netting-control dev`, a 3-replica cluster on this machine.

pub mod actors;
pub mod admin;
pub mod bootstrap;
pub mod catalog_file;
pub mod config;
pub mod ctl;
pub mod dev;
pub mod discovery;
pub mod grpc;
pub mod node;
pub mod telemetry;
