//! Network faults as data ([`Cuts`]) and their translation into the `iptables-restore` input
//! for one replica's namespace. The translation is pure, so the exact rules are tested as text.
//!
//! All rules live in two chains of the filter table of each replica's namespace:
//! [`CHAIN_IN`] (jumped to first from INPUT) and [`CHAIN_OUT`] (first from OUTPUT). Each change
//! flushes and refills both in one `iptables-restore --noflush` transaction, so a namespace
//! goes from the old set of cuts to the new one atomically.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::error::LabError;
use super::subnet::LabSubnet;

/// Chain for packets arriving at a replica.
pub const CHAIN_IN: &str = "NETTING-CHAOS-IN";
/// Chain for packets leaving a replica.
pub const CHAIN_OUT: &str = "NETTING-CHAOS-OUT";

/// The complete set of network faults in force; [`super::net::Network::set_cuts`] replaces the
/// previous set with it. The empty set is a healed network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cuts {
    /// `(a, b)`: every packet from replica `a` to replica `b` is dropped (as it leaves `a`).
    /// One direction only; a two-way partition holds both pairs. Note that TCP needs both
    /// directions, so a one-way cut breaks connections opened from either side: what it adds
    /// over a two-way cut is that packets `b` sends still arrive at `a`.
    pub links: BTreeSet<(usize, usize)>,
    /// `(i, port)`: replica `i` cannot be reached from the host (where the clients run) on TCP
    /// `port`; its other ports (the observer's admin port) stay reachable.
    pub clients: BTreeSet<(usize, u16)>,
}

impl Cuts {
    /// No cuts at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// `target` cut from every other of the `replicas` in both directions, and, when
    /// `client_port` is given, from the clients on that port too.
    pub fn isolate(target: usize, replicas: usize, client_port: Option<u16>) -> Self {
        let others: Vec<usize> = (0..replicas).filter(|&i| i != target).collect();
        let mut cuts = Self::partition(&[target], &others);
        if let Some(port) = client_port {
            cuts.clients.insert((target, port));
        }
        cuts
    }

    /// No packet passes between a replica of `side_a` and one of `side_b`, either way.
    /// A replica on both sides is not cut from itself.
    pub fn partition(side_a: &[usize], side_b: &[usize]) -> Self {
        let mut links = BTreeSet::new();
        for &a in side_a {
            for &b in side_b {
                if a != b {
                    links.insert((a, b));
                    links.insert((b, a));
                }
            }
        }
        Self {
            links,
            clients: BTreeSet::new(),
        }
    }

    /// Packets from `from` to `to` are dropped; the other direction still passes.
    pub fn one_way(from: usize, to: usize) -> Self {
        Self {
            links: BTreeSet::from([(from, to)]),
            clients: BTreeSet::new(),
        }
    }

    /// Replica `replica` unreachable from the clients on TCP `port`.
    pub fn clients_cut(replica: usize, port: u16) -> Self {
        Self {
            links: BTreeSet::new(),
            clients: BTreeSet::from([(replica, port)]),
        }
    }

    /// Both sets of cuts at once.
    #[must_use]
    pub fn union(mut self, other: &Cuts) -> Self {
        self.links.extend(other.links.iter().copied());
        self.clients.extend(other.clients.iter().copied());
        self
    }

    /// Whether nothing is cut.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.clients.is_empty()
    }

    /// Checks that every replica named exists in a network of `replicas` and that no replica is
    /// cut from itself.
    pub fn validate(&self, replicas: usize) -> Result<(), LabError> {
        for &(a, b) in &self.links {
            if a >= replicas || b >= replicas {
                return Err(LabError::InvalidCut(format!(
                    "link {a}->{b} names a replica outside 0..{replicas}"
                )));
            }
            if a == b {
                return Err(LabError::InvalidCut(format!(
                    "link {a}->{b} cuts a replica from itself"
                )));
            }
        }
        for &(i, port) in &self.clients {
            if i >= replicas {
                return Err(LabError::InvalidCut(format!(
                    "clients cut from replica {i} (port {port}), outside 0..{replicas}"
                )));
            }
        }
        Ok(())
    }
}

/// The `iptables-restore --noflush` input that puts `cuts` into force in `replica`'s
/// namespace, replacing whatever the two chains held. `install_jumps` adds the jumps from
/// INPUT and OUTPUT, needed once per namespace (the chain declarations create the chains when
/// missing and flush them when present).
pub fn restore_input(
    cuts: &Cuts,
    replica: usize,
    subnet: &LabSubnet,
    install_jumps: bool,
) -> String {
    let host = subnet.host_addr();
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(text, "*filter");
    let _ = writeln!(text, ":{CHAIN_IN} - [0:0]");
    let _ = writeln!(text, ":{CHAIN_OUT} - [0:0]");
    if install_jumps {
        let _ = writeln!(text, "-I INPUT 1 -j {CHAIN_IN}");
        let _ = writeln!(text, "-I OUTPUT 1 -j {CHAIN_OUT}");
    }
    for &(_, to) in cuts.links.iter().filter(|(from, _)| *from == replica) {
        let _ = writeln!(
            text,
            "-A {CHAIN_OUT} -d {}/32 -j DROP",
            subnet.replica_addr(to)
        );
    }
    for &(_, port) in cuts.clients.iter().filter(|(i, _)| *i == replica) {
        let _ = writeln!(
            text,
            "-A {CHAIN_IN} -s {host}/32 -p tcp -m tcp --dport {port} -j DROP"
        );
        let _ = writeln!(
            text,
            "-A {CHAIN_OUT} -d {host}/32 -p tcp -m tcp --sport {port} -j DROP"
        );
    }
    let _ = writeln!(text, "COMMIT");
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn subnet() -> LabSubnet {
        LabSubnet::new("10.231.3.0".parse().unwrap())
    }

    #[test]
    fn constructors() {
        assert_eq!(
            Cuts::partition(&[0], &[1, 2]).links,
            BTreeSet::from([(0, 1), (1, 0), (0, 2), (2, 0)])
        );
        assert_eq!(Cuts::one_way(2, 0).links, BTreeSet::from([(2, 0)]));
        let isolated = Cuts::isolate(1, 3, Some(7000));
        assert_eq!(
            isolated.links,
            BTreeSet::from([(1, 0), (0, 1), (1, 2), (2, 1)])
        );
        assert_eq!(isolated.clients, BTreeSet::from([(1, 7000)]));
        assert!(Cuts::isolate(1, 3, None).clients.is_empty());
        assert_eq!(
            Cuts::partition(&[0, 1], &[1, 2]).links,
            BTreeSet::from([(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]),
            "a replica on both sides is not cut from itself"
        );
        let both = Cuts::one_way(0, 1).union(&Cuts::clients_cut(2, 80));
        assert_eq!(both.links, BTreeSet::from([(0, 1)]));
        assert_eq!(both.clients, BTreeSet::from([(2, 80)]));
        assert!(Cuts::none().is_empty());
        assert!(!both.is_empty());
    }

    #[test]
    fn validation() {
        Cuts::isolate(2, 3, Some(1)).validate(3).unwrap();
        assert!(Cuts::one_way(0, 3).validate(3).is_err());
        assert!(Cuts::one_way(1, 1).validate(3).is_err());
        assert!(Cuts::clients_cut(5, 1).validate(3).is_err());
    }

    #[test]
    fn first_install_with_nothing_cut() {
        assert_eq!(
            restore_input(&Cuts::none(), 0, &subnet(), true),
            "*filter\n\
             :NETTING-CHAOS-IN - [0:0]\n\
             :NETTING-CHAOS-OUT - [0:0]\n\
             -I INPUT 1 -j NETTING-CHAOS-IN\n\
             -I OUTPUT 1 -j NETTING-CHAOS-OUT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn rules_of_a_partition_per_namespace() {
        let cuts = Cuts::partition(&[0], &[1, 2]);
        assert_eq!(
            restore_input(&cuts, 0, &subnet(), false),
            "*filter\n\
             :NETTING-CHAOS-IN - [0:0]\n\
             :NETTING-CHAOS-OUT - [0:0]\n\
             -A NETTING-CHAOS-OUT -d 10.231.3.11/32 -j DROP\n\
             -A NETTING-CHAOS-OUT -d 10.231.3.12/32 -j DROP\n\
             COMMIT\n"
        );
        assert_eq!(
            restore_input(&cuts, 2, &subnet(), false),
            "*filter\n\
             :NETTING-CHAOS-IN - [0:0]\n\
             :NETTING-CHAOS-OUT - [0:0]\n\
             -A NETTING-CHAOS-OUT -d 10.231.3.10/32 -j DROP\n\
             COMMIT\n"
        );
    }

    #[test]
    fn a_one_way_cut_touches_only_the_sender() {
        let cuts = Cuts::one_way(0, 1);
        assert!(restore_input(&cuts, 0, &subnet(), false).contains("-d 10.231.3.11/32 -j DROP"));
        assert!(!restore_input(&cuts, 1, &subnet(), false).contains("-A "));
    }

    #[test]
    fn rules_of_a_clients_cut() {
        let cuts = Cuts::isolate(1, 2, Some(7000));
        assert_eq!(
            restore_input(&cuts, 1, &subnet(), true),
            "*filter\n\
             :NETTING-CHAOS-IN - [0:0]\n\
             :NETTING-CHAOS-OUT - [0:0]\n\
             -I INPUT 1 -j NETTING-CHAOS-IN\n\
             -I OUTPUT 1 -j NETTING-CHAOS-OUT\n\
             -A NETTING-CHAOS-OUT -d 10.231.3.10/32 -j DROP\n\
             -A NETTING-CHAOS-IN -s 10.231.3.1/32 -p tcp -m tcp --dport 7000 -j DROP\n\
             -A NETTING-CHAOS-OUT -d 10.231.3.1/32 -p tcp -m tcp --sport 7000 -j DROP\n\
             COMMIT\n"
        );
    }
}
