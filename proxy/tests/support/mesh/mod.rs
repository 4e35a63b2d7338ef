//! The harness of the end-to-end tests in network namespaces (`tests/netns.rs`): a mesh of
//! real processes in a netting-chaos lab (see [`lab`]). Kept apart from `support/mod.rs`, the
//! data-plane tests' helpers, so that neither suite compiles the other's.
#![allow(dead_code)]

pub(crate) mod apps;
pub(crate) mod binaries;
pub(crate) mod client;
pub(crate) mod lab;
pub(crate) mod netns;
pub(crate) mod prom;
pub(crate) mod rules;
