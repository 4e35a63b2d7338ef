//! Choosing the lab's /24: one that no address or route of the host touches, so that the lab
//! can neither hide a real network nor be hidden by one. Parsing and choosing are pure (tested
//! on captured `ip` output); [`super::net`] runs the commands and holds a lock while it picks.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix, normalised to its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    len: u8,
}

impl Ipv4Net {
    /// The prefix of `addr`/`len`; `None` when `len` > 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let bits = u32::from(addr) & Self::mask(len);
        Some(Self {
            network: Ipv4Addr::from(bits),
            len,
        })
    }

    /// Parses `a.b.c.d/len`, or a bare `a.b.c.d` as a /32.
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once('/') {
            Some((addr, len)) => Self::new(addr.parse().ok()?, len.parse().ok()?),
            None => Self::new(text.parse().ok()?, 32),
        }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` is inside this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask(self.len) == u32::from(self.network)
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// The range the lab's /24s are taken from: private, and unlikely to be used by Docker
/// (172.17/16 and up), libvirt (192.168.122/24) or typical LANs.
pub const LAB_RANGE: Ipv4Net = Ipv4Net {
    network: Ipv4Addr::new(10, 231, 0, 0),
    len: 16,
};

/// Last octet of the host's address on the lab's /24.
pub const HOST_OCTET: u8 = 1;

/// Last octet of replica 0's address; replica `i` has `FIRST_REPLICA_OCTET + i`.
pub const FIRST_REPLICA_OCTET: u8 = 10;

/// One lab's /24 and the addresses in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabSubnet {
    net: Ipv4Net,
}

impl LabSubnet {
    /// The /24 whose network address is `network` (its last octet is ignored).
    pub fn new(network: Ipv4Addr) -> Self {
        Self {
            net: Ipv4Net {
                network: Ipv4Addr::from(u32::from(network) & Ipv4Net::mask(24)),
                len: 24,
            },
        }
    }

    /// The prefix.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    fn addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.net.network.octets();
        Ipv4Addr::new(a, b, c, last)
    }

    /// The host's address (`.1`), the address the clients connect from.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.addr(HOST_OCTET)
    }

    /// Replica `i`'s address (`.10 + i`); `i` must be below [`super::net::MAX_REPLICAS`].
    pub fn replica_addr(&self, i: usize) -> Ipv4Addr {
        let octet = usize::from(FIRST_REPLICA_OCTET).saturating_add(i).min(254);
        self.addr(u8::try_from(octet).unwrap_or(254))
    }
}

/// The prefixes of `ip -o -4 addr show` output (the token after each `inet`).
pub fn prefixes_in_addr_output(output: &str) -> Vec<Ipv4Net> {
    output
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.find(|t| *t == "inet")?;
            Ipv4Net::parse(tokens.next()?)
        })
        .collect()
}

/// Route types `ip route` may print before the destination.
const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
    "nat",
];

/// The destinations of `ip -4 route show table all` output (`default` is skipped: it overlaps
/// everything and is not a network anybody is on).
pub fn prefixes_in_route_output(output: &str) -> Vec<Ipv4Net> {
    output
        .lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            let mut dest = tokens.next()?;
            if ROUTE_TYPES.contains(&dest) {
                dest = tokens.next()?;
            }
            if dest == "default" {
                return None;
            }
            Ipv4Net::parse(dest)
        })
        .collect()
}

/// The first /24 of [`LAB_RANGE`] that overlaps none of `used`.
pub fn choose_subnet(used: &[Ipv4Net]) -> Option<LabSubnet> {
    let base = u32::from(LAB_RANGE.network);
    let count = 1u32 << (24 - u32::from(LAB_RANGE.len));
    (0..count)
        .map(|k| LabSubnet::new(Ipv4Addr::from(base + (k << 8))))
        .find(|candidate| !used.iter().any(|u| u.overlaps(&candidate.net)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ADDR: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever preferred_lft forever
9: nch311    inet 10.231.0.1/24 scope global nch311\\       valid_lft forever preferred_lft forever
12: nch977a    inet 10.231.1.1/24 scope global nch977a\\       valid_lft forever preferred_lft forever
";

    const ROUTES: &str = "\
default via 192.0.2.1 dev eth0
10.231.2.0/23 dev tun0 proto kernel scope link src 10.231.2.7
local 10.231.5.9 dev lo table local proto kernel scope host src 10.231.5.9
broadcast 192.0.2.255 dev eth0 table local proto kernel scope link src 192.0.2.2
";

    fn net(text: &str) -> Ipv4Net {
        Ipv4Net::parse(text).unwrap()
    }

    #[test]
    fn parses_addr_output() {
        assert_eq!(
            prefixes_in_addr_output(ADDR),
            vec![
                net("127.0.0.0/8"),
                net("192.0.2.0/24"),
                net("10.231.0.0/24"),
                net("10.231.1.0/24"),
            ]
        );
    }

    #[test]
    fn parses_route_output() {
        assert_eq!(
            prefixes_in_route_output(ROUTES),
            vec![
                net("10.231.2.0/23"),
                net("10.231.5.9/32"),
                net("192.0.2.255/32"),
            ]
        );
    }

    #[test]
    fn picks_the_first_free_24() {
        assert_eq!(
            choose_subnet(&[]).unwrap().net(),
            net("10.231.0.0/24"),
            "nothing used"
        );
        let mut used = prefixes_in_addr_output(ADDR);
        assert_eq!(choose_subnet(&used).unwrap().net(), net("10.231.2.0/24"));
        // A /23 route covers .2 and .3; a host route covers .5.
        used.extend(prefixes_in_route_output(ROUTES));
        assert_eq!(choose_subnet(&used).unwrap().net(), net("10.231.4.0/24"));
        used.push(net("10.231.4.0/24"));
        assert_eq!(choose_subnet(&used).unwrap().net(), net("10.231.6.0/24"));
    }

    #[test]
    fn a_covering_prefix_leaves_nothing() {
        assert_eq!(choose_subnet(&[net("10.0.0.0/8")]), None);
        assert_eq!(choose_subnet(&[net("10.231.0.0/16")]), None);
        // A neighbouring /16 does not matter.
        assert!(choose_subnet(&[net("10.230.0.0/16")]).is_some());
    }

    #[test]
    fn addresses_in_a_subnet() {
        let s = LabSubnet::new("10.231.7.99".parse().unwrap());
        assert_eq!(s.net(), net("10.231.7.0/24"));
        assert_eq!(s.host_addr(), Ipv4Addr::new(10, 231, 7, 1));
        assert_eq!(s.replica_addr(0), Ipv4Addr::new(10, 231, 7, 10));
        assert_eq!(s.replica_addr(4), Ipv4Addr::new(10, 231, 7, 14));
    }

    #[test]
    fn prefix_arithmetic() {
        assert_eq!(
            net("10.231.7.99/24").network(),
            Ipv4Addr::new(10, 231, 7, 0)
        );
        assert!(net("10.0.0.0/8").overlaps(&net("10.231.7.0/24")));
        assert!(net("10.231.7.0/24").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.231.7.0/24").overlaps(&net("10.231.8.0/24")));
        assert!(net("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(Ipv4Net::parse("1.2.3.4/33"), None);
        assert_eq!(Ipv4Net::parse("nonsense"), None);
    }
}
