//! `netting-proxy`: Netting's sidecar. It runs beside the application in every pod, as a uid
//! that netting-init exempts from redirection, and carries the pod's traffic:
//!
//! ```text
//!            app ──connect(10.1.2.3:8080)──▶ iptables (netting-init) ──▶ :15001 outbound
//!   outbound: SO_ORIGINAL_DST → catalog service owning 10.1.2.3:8080 → p2c over its ready
//!             endpoints → HTTP/1.1 or h2c per request (pooled, timeouts, budgeted retries)
//!             or TCP per connection; a destination outside the catalog passes through
//!   inbound:  :15006 ◀── redirected from other pods ── forwards to the app on 127.0.0.1
//!   admin:    :15020 /metrics /ready /config
//! ```
//!
//! - [`cli`]: flags (each also a `NETTING_PROXY_*` variable);
//! - the control plane is followed with `netting-discovery-client` (any replica, resume by
//!   version, last good config kept while no replica is reachable); [`routes`] turns each
//!   config into an immutable routing table and refuses (NACKs) one it cannot use;
//! - [`balance`]: power of two choices over a peak-EWMA of latency times requests in flight;
//! - [`dataplane`]: listeners, original destination, protocol detection, HTTP and TCP
//!   proxying, graceful drain;
//! - [`admin`] and [`metrics`]: what operators read.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod dataplane;
pub mod metrics;
pub mod routes;
