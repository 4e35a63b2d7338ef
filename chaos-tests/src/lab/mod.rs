//! The lab: network namespaces, links, cuts and the processes inside.
//!
//! # The picture
//!
//! ```text
//!  root namespace (the host: clients, observer)
//!      nch<pid>   10.231.N.1/24
//!         │ veth
//!  ───────┼──────────────────────────────────  nch<pid>-hub namespace
//!        host
//!         │
//!       [br0]  bridge, STP off, nothing filters
//!     ┌───┼──────────┐
//!     r0  r1         r2                         hub ends of the veths
//!  ───┼───┼──────────┼───────────────────────
//!     │   │          │
//!  nch<pid>-0   nch<pid>-1   nch<pid>-2        replica namespaces,
//!  eth0 .10     eth0 .11     eth0 .12          each with lo up
//! ```
//!
//! - A run is named by its [`RunId`]: `nch<pid>`, plus a letter when one process holds several
//!   labs (tests). Every namespace is `nch<pid>-<something>`; the only interface in the root
//!   namespace is the host's veth `nch<pid>` (at most 14 bytes, under Linux's 15). See [`names`].
//! - The /24 is the first of 10.231.0.0/16 that no address or route of the host overlaps; the
//!   host is `.1`, replica `i` is `.10+i` ([`subnet`]).
//! - The bridge lives in a hub namespace rather than the root namespace: with `br_netfilter`
//!   loaded the kernel passes bridged packets to the FORWARD chain of the bridge's namespace
//!   (Docker's policy there is DROP), and the per-bridge `nf_call_iptables 0` cannot opt out
//!   while the namespace's sysctl is 1. In the hub nothing filters, and nothing of the host's
//!   configuration is changed ([`net`]).
//! - A *cut* drops packets: `links` (a, b) drops what a sends to b, in a's OUTPUT; `clients`
//!   (i, port) drops TCP between the host and replica i on that port, in i's INPUT and OUTPUT,
//!   leaving other ports (the observer's) open. [`Network::set_cuts`] replaces the whole set,
//!   atomically per namespace, with `iptables-restore --noflush` on two dedicated chains
//!   ([`cuts`]).
//! - Replica programs run with `ip netns exec`, which execs in place, so the child's pid is
//!   the program's ([`process`]).
//! - Teardown kills every process in the namespaces and deletes the host veth and the
//!   namespaces (with them the bridge and the other veths). A run killed before it could is
//!   cleaned up by the next run's [`sweep`]; marker files in `/run/netting-chaos` tell dead
//!   runs from live ones ([`owner`]).
//! - [`preflight`] checks privileges and tools first and says what is missing.

mod cmd;
pub mod cuts;
pub mod error;
pub mod names;
pub mod net;
pub mod owner;
pub mod preflight;
pub mod process;
pub mod subnet;
pub mod sweep;

pub use cuts::Cuts;
pub use error::LabError;
pub use names::RunId;
pub use net::Network;
pub use preflight::{PreflightError, Tools};
pub use process::{ProcessSpec, ReplicaProcess};
pub use sweep::{SweepLock, SweepReport, sweep_stale};
