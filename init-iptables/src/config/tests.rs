use clap::Parser;

use super::*;

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["netting-init"];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

fn config(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["--proxy-uid", "1337"];
    argv.extend_from_slice(extra);
    Invocation::from_args(&args(&argv)).map(|i| match i.action {
        Action::Apply(c) => c,
        Action::Cleanup { .. } => panic!("not an apply"),
    })
}

/// The error for a bad value names the flag and the value as given.
fn assert_names(err: &ConfigError, flag: &str, value: &str) {
    let text = err.to_string();
    assert!(text.contains(&format!("--{flag}")), "{text}");
    assert!(text.contains(value), "{text}");
}

/// Defaults: the ports of the issue, every inbound port, nothing excluded, IPv4 only.
#[test]
fn defaults() {
    assert_eq!(config(&[]).unwrap(), Config::new(1337));
    assert_eq!(Config::new(1337).families(), [Family::V4]);
}

/// A full command line parses into the typed configuration; lists keep their order and drop
/// duplicates.
#[test]
fn parses_everything() {
    let c = config(&[
        "--proxy-gid",
        "1338",
        "--outbound-port",
        "16001",
        "--inbound-port",
        "16006",
        "--exclude-outbound-ports",
        "22, 3306,22",
        "--exclude-inbound-ports",
        "15020",
        "--exclude-outbound-cidrs",
        "10.96.0.0/12,169.254.169.254,fd00::/8",
        "--exclude-inbound-cidrs",
        "192.168.0.0/16",
        "--include-inbound-ports",
        "8080,9090",
        "--ipv6",
    ])
    .unwrap();
    assert_eq!(c.proxy_gid, Some(1338));
    assert_eq!((c.outbound_port, c.inbound_port), (16001, 16006));
    assert_eq!(c.exclude_outbound_ports, [22, 3306]);
    assert_eq!(c.exclude_inbound_ports, [15020]);
    assert_eq!(
        c.exclude_outbound_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.96.0.0/12", "169.254.169.254/32", "fd00::/8"]
    );
    assert_eq!(
        c.include_inbound_ports,
        InboundPorts::Only(vec![8080, 9090])
    );
    assert_eq!(c.families(), [Family::V4, Family::V6]);
}

/// Ports outside 1..=65535, non-numbers, signs and ranges are refused, naming flag and value.
#[test]
fn bad_ports() {
    for (flag, value) in [
        ("outbound-port", "0"),
        ("outbound-port", "65536"),
        ("inbound-port", "http"),
        ("inbound-port", "+80"),
        ("exclude-outbound-ports", "22,70000"),
        ("exclude-outbound-ports", "8000:8010"),
        ("exclude-inbound-ports", "-1"),
        ("include-inbound-ports", "80,x"),
    ] {
        let err = config(&[&format!("--{flag}={value}")]).unwrap_err();
        assert_names(&err, flag, value);
    }
}

/// An empty entry is a mistake; an empty value is an empty list.
#[test]
fn empty_entries() {
    let err = config(&["--exclude-outbound-ports", "22,,80"]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Invalid {
            problem: Problem::EmptyEntry,
            ..
        }
    ));
    assert_eq!(
        config(&["--exclude-outbound-ports", ""])
            .unwrap()
            .exclude_outbound_ports,
        Vec::<u16>::new()
    );
    assert_eq!(
        config(&["--include-inbound-ports", ""])
            .unwrap()
            .include_inbound_ports,
        InboundPorts::Only(vec![])
    );
}

/// CIDRs are strict: prefix within the family, digits only, no host bits.
#[test]
fn bad_cidrs() {
    for value in [
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/x",
        "10.0.0/8",
        "10.0.0.1/8",
        "300.0.0.0/8",
        "010.0.0.0/8",
        "10.0.0.0/8/1",
        "fd00::/129",
    ] {
        let err = config(&["--ipv6", "--exclude-outbound-cidrs", value]).unwrap_err();
        assert_names(&err, "exclude-outbound-cidrs", value);
    }
    let err = Cidr::parse("10.0.0.0/33").unwrap_err();
    assert_eq!(
        err,
        CidrError::PrefixTooLong {
            prefix: 33,
            max: 32
        }
    );
    let err = Cidr::parse("10.1.2.3/8").unwrap_err();
    assert_eq!(
        err.to_string(),
        "host bits are set; the network is 10.0.0.0/8"
    );
}

/// CIDR edge cases that are fine.
#[test]
fn good_cidrs() {
    for (text, shown) in [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("::/0", "::/0"),
        ("FD00:0:0::/48", "fd00::/48"),
        ("2001:db8::1", "2001:db8::1/128"),
    ] {
        assert_eq!(Cidr::parse(text).unwrap().to_string(), shown);
    }
}

/// An IPv6 network without --ipv6 would never match: refused.
#[test]
fn ipv6_cidr_needs_ipv6() {
    let err = config(&["--exclude-inbound-cidrs", "fd00::/8"]).unwrap_err();
    assert_names(&err, "exclude-inbound-cidrs", "fd00::/8");
    assert!(err.to_string().contains("--ipv6"));
}

/// UIDs and GIDs: numeric, not root, not the "no id" value 2^32-1.
#[test]
fn ids() {
    let uid = |value: &str| Invocation::from_args(&args(&[&format!("--proxy-uid={value}")]));
    for value in ["0", "-1", "proxy", "4294967295", "4294967296", "1e3", ""] {
        let err = uid(value).unwrap_err();
        assert_names(&err, "proxy-uid", value);
    }
    assert!(uid("0").unwrap_err().to_string().contains("root"));
    let err = config(&["--proxy-gid", "0"]).unwrap_err();
    assert_names(&err, "proxy-gid", "0");
    let inv = uid("4294967294").unwrap();
    assert!(matches!(inv.action, Action::Apply(c) if c.proxy_uid == 4_294_967_294));
}

/// The proxy's own ports cannot be excluded in either direction.
#[test]
fn proxy_ports_cannot_be_excluded() {
    for (flag, value) in [
        ("exclude-inbound-ports", "15020,15006"),
        ("exclude-inbound-ports", "15001"),
        ("exclude-outbound-ports", "15001"),
    ] {
        let err = config(&[&format!("--{flag}={value}")]).unwrap_err();
        assert_names(&err, flag, value);
    }
}

/// Contradictions between flags are reported with both flags.
#[test]
fn conflicts() {
    let err = config(&["--outbound-port", "15006"]).unwrap_err();
    assert_eq!(err, ConfigError::SameProxyPorts(15006));
    let err = config(&[
        "--include-inbound-ports",
        "80,8080",
        "--exclude-inbound-ports",
        "8080",
    ])
    .unwrap_err();
    assert_eq!(err, ConfigError::IncludedAndExcluded(8080));
    let err = config(&["--include-inbound-ports", "*,80"]).unwrap_err();
    assert_names(&err, "include-inbound-ports", "*,80");
}

/// --proxy-uid is needed to apply but not to clean up; cleanup still checks given values.
#[test]
fn cleanup_needs_no_uid() {
    assert!(Args::try_parse_from(["netting-init"]).is_err());
    let inv = Invocation::from_args(&args(&["--cleanup", "--ipv6"])).unwrap();
    assert_eq!(inv.action, Action::Cleanup { ipv6: true });
    let err = Invocation::from_args(&args(&["--cleanup", "--exclude-outbound-ports", "0"]));
    assert!(err.is_err());
}

/// --backend takes auto, nft or legacy.
#[test]
fn backend_flag() {
    let inv = Invocation::from_args(&args(&["--proxy-uid", "1", "--backend", "legacy"])).unwrap();
    assert_eq!(inv.backend, BackendChoice::Legacy);
    assert!(Args::try_parse_from(["netting-init", "--proxy-uid", "1", "--backend", "x"]).is_err());
}
