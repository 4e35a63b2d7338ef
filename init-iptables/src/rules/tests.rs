use super::*;
use crate::config::Cidr;
use crate::table::Tables;

const FRESH: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

/// Somebody else's nat table: rules in built-in chains, their own chains, one of them named
/// with Netting's prefix.
const FOREIGN: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT - [0:0]
:NETTING_OTHER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT
-A OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353
-A OUTPUT -j NETTING_OTHER
-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE
-A CNI-HOSTPORT -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.2:443
-A NETTING_OTHER -p tcp -m tcp --dport 9 -j RETURN
COMMIT
";

fn apply(state: &Tables, rules: &RuleSet) -> Tables {
    state.restore(&rules.restore_input(&state.nat())).unwrap()
}

fn clean(state: &Tables) -> Tables {
    match cleanup(&state.nat()).input {
        Some(input) => state.restore(&input).unwrap(),
        None => state.clone(),
    }
}

fn full_config() -> Config {
    let mut c = Config::new(1337);
    c.proxy_gid = Some(1337);
    c.exclude_outbound_ports = vec![22, 3306];
    c.exclude_inbound_ports = vec![15020, 15090];
    c.exclude_outbound_cidrs = ["10.96.0.0/12", "fd00::/8"]
        .into_iter()
        .map(|t| Cidr::parse(t).unwrap())
        .collect();
    c.exclude_inbound_cidrs = vec![Cidr::parse("192.168.0.0/16").unwrap()];
    c.ipv6 = true;
    c
}

/// The OUTPUT chain exempts the proxy before anything else and redirects last.
#[test]
fn output_order() {
    let rs = rules(&full_config(), Family::V4);
    let (_, output) = rs.chains.iter().find(|(n, _)| *n == OUTPUT).unwrap();
    assert_eq!(
        output,
        &[
            "-m owner --uid-owner 1337 -j RETURN",
            "-m owner --gid-owner 1337 -j RETURN",
            "-d 127.0.0.0/8 -j RETURN",
            "-d 10.96.0.0/12 -j RETURN",
            "-p tcp -m tcp --dport 22 -j RETURN",
            "-p tcp -m tcp --dport 3306 -j RETURN",
            "-p tcp -j NETTING_REDIRECT",
        ]
    );
}

/// Each family gets only its own networks and its own loopback.
#[test]
fn families_are_separate() {
    let v6 = rules(&full_config(), Family::V6).fresh_input();
    assert!(v6.contains("-d ::1/128 -j RETURN"));
    assert!(v6.contains("-d fd00::/8 -j RETURN"));
    assert!(!v6.contains("10.96.0.0"));
    assert!(!v6.contains("192.168."));
    let v4 = rules(&full_config(), Family::V4).fresh_input();
    assert!(!v4.contains("fd00"));
    assert!(v4.contains("-s 192.168.0.0/16 -j RETURN"));
}

/// With an include list only those ports are redirected inbound; an empty list redirects none.
#[test]
fn include_list() {
    let mut c = Config::new(7);
    c.include_inbound_ports = InboundPorts::Only(vec![80, 443]);
    let rs = rules(&c, Family::V4);
    assert_eq!(
        rs.chains[0].1,
        [
            "-p tcp -m tcp --dport 80 -j NETTING_IN_REDIRECT",
            "-p tcp -m tcp --dport 443 -j NETTING_IN_REDIRECT",
        ]
    );
    c.include_inbound_ports = InboundPorts::Only(vec![]);
    assert!(rules(&c, Family::V4).chains[0].1.is_empty());
}

/// Applying twice gives the same table, and the second transaction adds no jump.
#[test]
fn applying_twice_is_idempotent() {
    for base in [FRESH, FOREIGN] {
        let base = Tables::parse(base).unwrap();
        let rs = rules(&full_config(), Family::V4);
        let once = apply(&base, &rs);
        let second_input = rs.restore_input(&once.nat());
        assert!(!second_input.contains("-A PREROUTING"), "{second_input}");
        assert!(!second_input.contains("-A OUTPUT"), "{second_input}");
        assert_eq!(once.restore(&second_input).unwrap(), once);
    }
}

/// Our jumps are appended after other people's rules and do not disturb them.
#[test]
fn jumps_are_appended() {
    let state = apply(
        &Tables::parse(FOREIGN).unwrap(),
        &rules(&Config::new(1337), Family::V4),
    );
    assert_eq!(
        state.nat().chain("OUTPUT").unwrap().rules,
        [
            "-p udp -m udp --dport 53 -j REDIRECT --to-ports 5353",
            "-j NETTING_OTHER",
            "-p tcp -j NETTING_OUTPUT",
        ]
    );
}

/// A new configuration replaces the old one: the result is as if applied to a fresh table.
#[test]
fn reconfiguring_replaces_the_rules() {
    let fresh = Tables::parse(FRESH).unwrap();
    let old = apply(&fresh, &rules(&full_config(), Family::V4));
    let new = rules(&Config::new(99), Family::V4);
    assert_eq!(apply(&old, &new), apply(&fresh, &new));
}

/// Stale variants and duplicates of the jumps are removed; exactly one of each remains.
#[test]
fn stale_and_duplicate_jumps_are_replaced() {
    let messy = Tables::parse(
        "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NETTING_INBOUND - [0:0]
:NETTING_OUTPUT - [0:0]
-A PREROUTING -j NETTING_INBOUND
-A OUTPUT -p tcp -j NETTING_OUTPUT
-A OUTPUT -p tcp -j NETTING_OUTPUT
COMMIT
",
    )
    .unwrap();
    let rs = rules(&Config::new(1337), Family::V4);
    let state = apply(&messy, &rs);
    let nat = state.nat();
    assert_eq!(
        nat.chain("PREROUTING").unwrap().rules,
        ["-p tcp -j NETTING_INBOUND"]
    );
    assert_eq!(
        nat.chain("OUTPUT").unwrap().rules,
        ["-p tcp -j NETTING_OUTPUT"]
    );
    assert_eq!(apply(&state, &rs), state);
}

/// Cleanup gives back exactly the table there was before applying, foreign rules and chains
/// (including NETTING_OTHER) included.
#[test]
fn cleanup_restores_the_previous_table() {
    for base in [FRESH, FOREIGN] {
        let before = Tables::parse(base).unwrap();
        for family in [Family::V4, Family::V6] {
            let after = clean(&apply(&before, &rules(&full_config(), family)));
            assert_eq!(after, before, "{after}");
        }
    }
}

/// With nothing of Netting's present, cleanup has nothing to do.
#[test]
fn cleanup_of_a_clean_table_is_a_no_op() {
    for base in [FRESH, FOREIGN] {
        let plan = cleanup(&Tables::parse(base).unwrap().nat());
        assert_eq!(plan.input, None);
    }
}

/// A rule of someone else's chain that jumps into a Netting chain has to go with the chain.
#[test]
fn cleanup_removes_foreign_references() {
    let state = apply(
        &Tables::parse(FOREIGN).unwrap(),
        &rules(&Config::new(1337), Family::V4),
    );
    let state = state
        .restore("*nat\n-A CNI-HOSTPORT -p tcp -j NETTING_REDIRECT\nCOMMIT\n")
        .unwrap();
    let plan = cleanup(&state.nat());
    assert!(plan.jumps.contains(&(
        "CNI-HOSTPORT".to_owned(),
        "-p tcp -j NETTING_REDIRECT".to_owned()
    )));
    assert_eq!(clean(&state), Tables::parse(FOREIGN).unwrap());
}

/// Half-applied leftovers (a chain without its jump) are cleaned too.
#[test]
fn cleanup_of_leftovers() {
    let state = Tables::parse(FRESH)
        .unwrap()
        .restore("*nat\n:NETTING_REDIRECT - [0:0]\n-A NETTING_REDIRECT -p tcp -j REDIRECT --to-ports 1\nCOMMIT\n")
        .unwrap();
    assert_eq!(clean(&state), Tables::parse(FRESH).unwrap());
}
