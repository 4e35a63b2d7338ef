//! `netting-init`: the pod's init step. In the current network namespace it redirects
//! outbound TCP to the sidecar's outbound port and inbound TCP to its inbound port, with
//! iptables' nat table, and can remove exactly that again.
//!
//! # Chains and rule order
//!
//! Four chains of its own, entered only for TCP:
//!
//! ```text
//! PREROUTING  -p tcp -j NETTING_INBOUND        (connections arriving from outside)
//!   NETTING_INBOUND   -s <excluded source CIDR>        -j RETURN
//!                     -p tcp --dport <excluded port>   -j RETURN
//!                     -p tcp [--dport <included port>] -j NETTING_IN_REDIRECT
//!   NETTING_IN_REDIRECT  -p tcp -j REDIRECT --to-ports <inbound port>
//!
//! OUTPUT      -p tcp -j NETTING_OUTPUT         (connections opened inside the pod)
//!   NETTING_OUTPUT    -m owner --uid-owner <proxy uid>  -j RETURN
//!                     -m owner --gid-owner <proxy gid>  -j RETURN   (with --proxy-gid)
//!                     -d 127.0.0.0/8 (::1/128)          -j RETURN
//!                     -d <excluded CIDR>                -j RETURN
//!                     -p tcp --dport <excluded port>    -j RETURN
//!                     -p tcp                            -j NETTING_REDIRECT
//!   NETTING_REDIRECT  -p tcp -j REDIRECT --to-ports <outbound port>
//! ```
//!
//! The proxy's own connections are exempt first, so its upstream connections (and its
//! inbound side's connections to the application, whichever address it dials) never loop
//! back into it. Loopback destinations are exempt; a connection from the application to its
//! own pod IP is not (see [`rules::rules`] for why). Only the nat table is touched, and only
//! through the chains above and the two jumps.
//!
//! # One transaction, idempotent
//!
//! Each address family is written with one `iptables-restore --noflush` run, which the kernel
//! commits as a whole or not at all. Declaring a chain in that input empties it, so Netting's
//! chains are rebuilt every time; the two jumps are decided from the table read just before
//! (append when absent, keep when present, delete stale variants and duplicates), because
//! restore input cannot say "append unless present". Running twice gives the same rules; a
//! changed configuration replaces the old rules in one step. See [`RuleSet::restore_input`].
//!
//! With `--ipv6` there are two transactions: both are checked (`--test`) before either is
//! committed, and if the second fails to commit the first is removed again. Without `--ipv6`
//! ip6tables is not touched at all (rules an earlier `--ipv6` run left there stay until
//! `--cleanup`).
//!
//! # Cleanup
//!
//! `--cleanup` deletes every rule that jumps to one of the four chains, then empties and
//! deletes those chains, in one transaction per family; nothing else is named in it, so other
//! rules, other chains (even ones called `NETTING_SOMETHING`) and other tables are untouched.
//! With nothing to remove it does nothing and succeeds.
//!
//! # Back ends
//!
//! `--backend nft|legacy` chooses; `auto` (the default) counts the rules each back end
//! already holds (IPv4 and IPv6 `*-save` output) and takes the one with more, else nft — the
//! approach of the Kubernetes iptables wrapper scripts. Cleanup with `auto` looks in both.
//! State is read with the full `*-save` dump, never `-t nat`: the legacy tool creates a table
//! by naming it, and reading must not change anything.
//!
//! # Privileges and exit codes
//!
//! Needs `CAP_NET_ADMIN` and `CAP_NET_RAW` in the pod's namespace (what the iptables tools
//! need), nothing else. Exit 0 on success, 2 for a bad flag value (nothing is applied), 1 when
//! applying or removing failed.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod rules;
pub mod run;
pub mod table;
pub mod xtables;

pub use cli::Args;
pub use config::{Action, Config, ConfigError, Invocation};
pub use rules::{RuleSet, rules};
pub use run::{RunError, run};
pub use table::{Table, Tables};
pub use xtables::{Backend, BackendChoice, Family, SystemXtables, Xtables};
