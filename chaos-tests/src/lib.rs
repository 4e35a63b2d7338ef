//! `netting-chaos`: Netting's chaos lab.
//!
//! It starts a cluster of real `netting-control` processes, each in its own network namespace
//! with its own address on a bridge (a stand-in for pods), runs writers, readers and simulated
//! sidecars against it, injects faults from a seeded schedule, and then checks the invariants of
//! the design on what it observed:
//!
//! - [`lab`] builds the namespaces, the bridge and the links, starts and signals the replica
//!   processes, cuts links with iptables, and tears everything down (also what a crashed run
//!   left behind);
//! - [`schedule`] turns a seed (or a schedule file) into the list of faults, checked before
//!   anything starts;
//! - [`workload`] runs the writers, readers, sidecars and the observer, recording a
//!   [`history::History`];
//! - [`check`] holds the invariant checks, the linearizability checker among them;
//! - [`report`] turns a run into `report.json`, `summary.txt` and `timeline.svg`;
//! - [`run`] ties them together.

pub mod check;
pub mod history;
pub mod lab;
pub mod report;
pub mod run;
pub mod schedule;
pub mod workload;
