//! Rule generation: plain functions from a [`Config`] (and, for the jumps, the current nat
//! table) to `iptables-restore --noflush` input. No IO here.

use std::fmt::Write as _;

use crate::config::{Cidr, Config, InboundPorts};
use crate::table::{Table, rule_target};
use crate::xtables::Family;

/// Entered from PREROUTING for every TCP connection arriving from outside the pod.
pub const INBOUND: &str = "NETTING_INBOUND";
/// Redirects to the proxy's inbound port.
pub const IN_REDIRECT: &str = "NETTING_IN_REDIRECT";
/// Entered from OUTPUT for every TCP connection a process of the pod opens.
pub const OUTPUT: &str = "NETTING_OUTPUT";
/// Redirects to the proxy's outbound port.
pub const REDIRECT: &str = "NETTING_REDIRECT";

/// Netting's chains, in the order they are declared (which is also their name order, the
/// order iptables-save lists user chains in). Cleanup removes exactly these.
pub const OWN_CHAINS: [&str; 4] = [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT];

/// The nat rules for one address family: Netting's chains with their rules, and the jumps into
/// them from the built-in chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// IPv4 or IPv6.
    pub family: Family,
    /// Each of [`OWN_CHAINS`] with its rule specifications, in order.
    pub chains: Vec<(&'static str, Vec<String>)>,
    /// `(built-in chain, rule specification)` of each jump into Netting's chains.
    pub jumps: Vec<(&'static str, String)>,
}

/// The rules for `config` and `family`, in the exact form iptables-save prints them (so that
/// what is applied can be compared with what is read back, as text).
///
/// NETTING_OUTPUT, first match wins:
/// 1. the proxy's UID (then GID) returns: its own upstream connections must not loop back;
/// 2. loopback destinations (127.0.0.0/8, ::1) return: in-pod traffic over `lo`;
/// 3. excluded destination networks, then excluded destination ports, return;
/// 4. everything else jumps to NETTING_REDIRECT (REDIRECT to the outbound port).
///
/// An application connecting to its own pod IP is *not* exempt: that destination is not a
/// loopback address, so the connection goes through the outbound proxy like any other, and
/// the proxy's onward connection is exempt by rule 1. This keeps one rule for "what the app
/// sends" and needs no cooperation from the proxy (such as a reserved source address).
///
/// NETTING_INBOUND: excluded source networks, then excluded local ports, return; the included
/// ports (all by default) jump to NETTING_IN_REDIRECT (REDIRECT to the inbound port). Loopback
/// needs no rule here: a connection opened inside the pod gets its NAT decision in OUTPUT and
/// never traverses the nat PREROUTING chain.
pub fn rules(config: &Config, family: Family) -> RuleSet {
    let cidrs = |list: &[Cidr]| -> Vec<Cidr> {
        list.iter()
            .filter(|c| c.family() == family)
            .copied()
            .collect()
    };
    let dport = |port: u16| format!("-p tcp -m tcp --dport {port}");

    let mut inbound = Vec::new();
    for cidr in cidrs(&config.exclude_inbound_cidrs) {
        inbound.push(format!("-s {cidr} -j RETURN"));
    }
    for port in &config.exclude_inbound_ports {
        inbound.push(format!("{} -j RETURN", dport(*port)));
    }
    match &config.include_inbound_ports {
        InboundPorts::All => inbound.push(format!("-p tcp -j {IN_REDIRECT}")),
        InboundPorts::Only(ports) => {
            for port in ports {
                inbound.push(format!("{} -j {IN_REDIRECT}", dport(*port)));
            }
        }
    }

    let mut output = vec![format!(
        "-m owner --uid-owner {} -j RETURN",
        config.proxy_uid
    )];
    if let Some(gid) = config.proxy_gid {
        output.push(format!("-m owner --gid-owner {gid} -j RETURN"));
    }
    output.push(match family {
        Family::V4 => "-d 127.0.0.0/8 -j RETURN".to_owned(),
        Family::V6 => "-d ::1/128 -j RETURN".to_owned(),
    });
    for cidr in cidrs(&config.exclude_outbound_cidrs) {
        output.push(format!("-d {cidr} -j RETURN"));
    }
    for port in &config.exclude_outbound_ports {
        output.push(format!("{} -j RETURN", dport(*port)));
    }
    output.push(format!("-p tcp -j {REDIRECT}"));

    RuleSet {
        family,
        chains: vec![
            (INBOUND, inbound),
            (
                IN_REDIRECT,
                vec![format!(
                    "-p tcp -j REDIRECT --to-ports {}",
                    config.inbound_port
                )],
            ),
            (OUTPUT, output),
            (
                REDIRECT,
                vec![format!(
                    "-p tcp -j REDIRECT --to-ports {}",
                    config.outbound_port
                )],
            ),
        ],
        jumps: vec![
            ("PREROUTING", format!("-p tcp -j {INBOUND}")),
            ("OUTPUT", format!("-p tcp -j {OUTPUT}")),
        ],
    }
}

fn is_own(chain: &str) -> bool {
    OWN_CHAINS.contains(&chain)
}

impl RuleSet {
    /// The one transaction that makes `current` (the nat table as read just before) hold
    /// exactly these rules.
    ///
    /// Declaring a user chain (`:NAME - [0:0]`) under `--noflush` creates it or empties it, so
    /// Netting's chains are rebuilt from scratch each time. The jumps from the built-in chains
    /// cannot be handled that way (flushing OUTPUT would drop other people's rules) and
    /// iptables-restore has no "append if absent"; a delete-then-append would fail the whole
    /// transaction when the rule is absent. So the jumps are decided from `current`: a wanted
    /// jump already present is kept (one copy), absent ones are appended, and any other rule
    /// of a built-in chain that targets a Netting chain (a stale variant or a duplicate) is
    /// deleted. If the table changed between the read and the commit, a `-D` no longer matches
    /// and the transaction fails as a whole: nothing is half-applied.
    pub fn restore_input(&self, current: &Table) -> String {
        let mut out = String::from("*nat\n");
        let mut missing: Vec<&(&str, String)> = Vec::new();
        let mut kept: Vec<&(&str, String)> = Vec::new();
        for jump in &self.jumps {
            let present = current
                .chain(jump.0)
                .is_some_and(|c| c.rules.contains(&jump.1));
            if present {
                kept.push(jump);
            } else {
                missing.push(jump);
            }
        }
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (name, chain) in current.chains() {
            if chain.policy.is_none() {
                continue;
            }
            for rule in &chain.rules {
                if !rule_target(rule).is_some_and(is_own) {
                    continue;
                }
                let wanted = kept.iter().any(|(c, r)| *c == name && r == rule);
                if wanted && !seen.contains(&(name, rule.as_str())) {
                    seen.push((name, rule));
                } else {
                    let _ = writeln!(out, "-D {name} {rule}");
                }
            }
        }
        for (name, _) in &self.chains {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for (name, rules) in &self.chains {
            for rule in rules {
                let _ = writeln!(out, "-A {name} {rule}");
            }
        }
        for (chain, rule) in missing {
            let _ = writeln!(out, "-A {chain} {rule}");
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The transaction for a nat table that holds nothing of Netting's (a fresh namespace):
    /// what the golden files show.
    pub fn fresh_input(&self) -> String {
        self.restore_input(&Table::default())
    }
}

/// What cleanup removes from one nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    /// The transaction; `None` when there is nothing of Netting's to remove.
    pub input: Option<String>,
    /// `(chain, rule)` of each rule deleted because it targets a Netting chain.
    pub jumps: Vec<(String, String)>,
    /// The Netting chains deleted.
    pub chains: Vec<&'static str>,
}

/// The one transaction that removes Netting's chains from `current` and every rule that jumps
/// to them (they cannot be deleted while referenced), and nothing else: other rules, other
/// chains (even ones whose names start with `NETTING_`) and other tables are not named in it.
/// Chains are emptied before any is deleted because they reference each other.
pub fn cleanup(current: &Table) -> Cleanup {
    let mut jumps = Vec::new();
    for (name, chain) in current.chains() {
        if is_own(name) {
            continue;
        }
        for rule in &chain.rules {
            if rule_target(rule).is_some_and(is_own) {
                jumps.push((name.to_owned(), rule.clone()));
            }
        }
    }
    let chains: Vec<&'static str> = OWN_CHAINS
        .into_iter()
        .filter(|c| current.chain(c).is_some())
        .collect();
    if jumps.is_empty() && chains.is_empty() {
        return Cleanup {
            input: None,
            jumps,
            chains,
        };
    }
    let mut out = String::from("*nat\n");
    for (chain, rule) in &jumps {
        let _ = writeln!(out, "-D {chain} {rule}");
    }
    for chain in &chains {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in &chains {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    Cleanup {
        input: Some(out),
        jumps,
        chains,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
