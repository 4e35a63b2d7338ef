//! `netting-init` for real, as root, in fresh network namespaces, with both iptables back ends.
//! Each test prints why and returns early when it cannot run here (not root, tools missing),
//! and fails instead when `NETTING_REQUIRE_TOOLS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use netting_init::{Backend, Family, Tables};
use support::{
    CASES, EMPTY_NAT, Netns, can_run, case_config, expected_after, namespace, namespace_problem,
    read_golden, stderr,
};

fn backend_flag(backend: Backend) -> String {
    format!("--backend={}", backend.name())
}

fn with_backend<'a>(args: &[&'a str], flag: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.push(flag);
    all
}

/// Somebody else's rules, present before netting-init runs: rules in built-in nat chains, their
/// own chains (one named with Netting's prefix), and a filter rule.
const FOREIGN_V4: &str = "\
*nat
:CNI-HOSTPORT - [0:0]
:NETTING_OTHER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT
-A OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353
-A OUTPUT -j NETTING_OTHER
-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE
-A CNI-HOSTPORT -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.2:443
-A NETTING_OTHER -p tcp -m tcp --dport 9 -j RETURN
COMMIT
*filter
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";

const FOREIGN_V6: &str = "\
*nat
:NETTING_OTHER - [0:0]
-A OUTPUT -j NETTING_OTHER
-A NETTING_OTHER -d fd00::/8 -j RETURN
COMMIT
";

fn check_applies_golden_rules(backend: Backend) {
    let flag = backend_flag(backend);
    for (name, args) in CASES {
        let Some(ns) = namespace(backend) else { return };
        let args = with_backend(args, &flag);
        let families = case_config(args.as_slice()).families();

        ns.init_ok(&args);
        let mut first = Vec::new();
        for &family in &families {
            let saved = ns.save(backend, family);
            let expected = expected_after(&read_golden(name, family));
            assert_eq!(
                saved.without_empty(),
                expected,
                "{name} {family:?} with {backend}: iptables-save shows\n{saved}\nexpected\n{expected}"
            );
            first.push(saved);
        }

        ns.init_ok(&args);
        for (&family, before) in families.iter().zip(&first) {
            assert_eq!(
                &ns.save(backend, family),
                before,
                "{name} {family:?} with {backend}: a second run changed the rules"
            );
        }
        // Nothing was written to the other back end.
        let other = if backend == Backend::Nft {
            Backend::Legacy
        } else {
            Backend::Nft
        };
        assert_eq!(
            ns.save(other, Family::V4).without_empty(),
            Tables::default()
        );
    }
}

/// Every golden configuration, applied in a fresh namespace, gives exactly the golden rules in
/// `iptables-save` (counters ignored), in each family it asks for; a second run changes
/// nothing; the other back end is not touched.
#[test]
fn applies_golden_rules_nft() {
    check_applies_golden_rules(Backend::Nft);
}

/// As [`applies_golden_rules_nft`], with iptables-legacy.
#[test]
fn applies_golden_rules_legacy() {
    check_applies_golden_rules(Backend::Legacy);
}

fn check_cleanup_restores_previous_state(backend: Backend) {
    let flag = backend_flag(backend);
    let dual = CASES.iter().find(|(n, _)| *n == "dual-stack").unwrap().1;
    let args = with_backend(dual, &flag);
    for foreign in [false, true] {
        let Some(ns) = namespace(backend) else { return };
        if foreign {
            ns.restore(backend, Family::V4, FOREIGN_V4);
            ns.restore(backend, Family::V6, FOREIGN_V6);
        }
        let before_v4 = ns.save(backend, Family::V4);
        let before_v6 = ns.save(backend, Family::V6);

        ns.init_ok(&args);
        let applied = ns.save(backend, Family::V4);
        assert!(applied.nat().chain("NETTING_OUTPUT").is_some());
        if foreign {
            // The jump is appended after the rules that were there.
            assert_eq!(
                applied.nat().chain("OUTPUT").unwrap().rules,
                [
                    "-p udp -m udp --dport 53 -j REDIRECT --to-ports 5353",
                    "-j NETTING_OTHER",
                    "-p tcp -j NETTING_OUTPUT"
                ]
            );
        }

        for _ in 0..2 {
            ns.init_ok(&["--cleanup", "--ipv6", &flag]);
            let (after_v4, after_v6) = (ns.save(backend, Family::V4), ns.save(backend, Family::V6));
            if foreign {
                // Exactly as before: every table, chain and rule.
                assert_eq!(after_v4, before_v4, "after cleanup:\n{after_v4}");
                assert_eq!(after_v6, before_v6, "after cleanup:\n{after_v6}");
            } else {
                // A table that held nothing may now be listed with its empty built-in chains.
                assert_eq!(after_v4.without_empty(), before_v4.without_empty());
                assert_eq!(after_v6.without_empty(), before_v6.without_empty());
            }
        }
    }
}

/// `--cleanup` leaves the nat table (and every other) exactly as it was before netting-init
/// ran, including other people's rules and chains — even one named NETTING_OTHER — and a
/// second cleanup is a harmless no-op.
#[test]
fn cleanup_restores_previous_state_nft() {
    check_cleanup_restores_previous_state(Backend::Nft);
}

/// As [`cleanup_restores_previous_state_nft`], with iptables-legacy.
#[test]
fn cleanup_restores_previous_state_legacy() {
    check_cleanup_restores_previous_state(Backend::Legacy);
}

fn check_dry_run_changes_nothing(backend: Backend) {
    let flag = backend_flag(backend);
    // A fresh namespace: not even an empty table may appear.
    let Some(ns) = namespace(backend) else { return };
    let before = (
        ns.save_text(backend, Family::V4),
        ns.save_text(backend, Family::V6),
    );
    let out = ns.init_ok(&["--proxy-uid", "1337", "--dry-run", "--ipv6", &flag]);
    let after = (
        ns.save_text(backend, Family::V4),
        ns.save_text(backend, Family::V6),
    );
    assert_eq!(after, before, "a dry run changed the tables");
    assert!(
        before.0.is_empty(),
        "fresh namespace lists tables:\n{}",
        before.0
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "# iptables-{b}-restore --noflush --wait 10\n{}",
            read_golden("default", Family::V4),
            b = backend.name()
        )),
        "{stdout}"
    );

    // With other rules present, and the configuration from the environment.
    let Some(ns) = namespace(backend) else { return };
    ns.restore(backend, Family::V4, FOREIGN_V4);
    let before = ns.save_text(backend, Family::V4);
    let out = ns
        .init_command(&[])
        .env("NETTING_INIT_PROXY_UID", "1337")
        .env("NETTING_INIT_DRY_RUN", "true")
        .env("NETTING_INIT_BACKEND", backend.name())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        Tables::parse(&ns.save_text(backend, Family::V4)).unwrap(),
        Tables::parse(&before).unwrap()
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "# iptables-{}-restore --noflush --wait 10\n{}",
            backend.name(),
            read_golden("default", Family::V4)
        )
    );
}

/// `--dry-run` prints the golden restore input and changes nothing — in a fresh namespace not
/// even an empty nat table appears; flags also come from `NETTING_INIT_*` variables.
#[test]
fn dry_run_changes_nothing_nft() {
    check_dry_run_changes_nothing(Backend::Nft);
}

/// As [`dry_run_changes_nothing_nft`], with iptables-legacy.
#[test]
fn dry_run_changes_nothing_legacy() {
    check_dry_run_changes_nothing(Backend::Legacy);
}

fn check_bad_values_apply_nothing(backend: Backend) {
    let flag = backend_flag(backend);
    let Some(ns) = namespace(backend) else { return };
    ns.restore(backend, Family::V4, FOREIGN_V4);
    let before = ns.save(backend, Family::V4);
    for (bad_flag, value) in [
        ("--exclude-outbound-cidrs", "10.0.0.0/33"),
        ("--exclude-inbound-ports", "70000"),
        ("--outbound-port", "0"),
        ("--proxy-uid", "0"),
        ("--proxy-uid", "envoy"),
        ("--proxy-gid", "-5"),
        ("--exclude-outbound-cidrs", "fd00::/8"),
    ] {
        let arg = format!("{bad_flag}={value}");
        let mut args = vec!["--proxy-uid", "1337", &flag, &arg];
        if bad_flag == "--proxy-uid" {
            args.drain(..2);
        }
        let out = ns.init(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(bad_flag) && err.contains(value),
            "{args:?}: the error should name the flag and value: {err}"
        );
        assert_eq!(
            ns.save(backend, Family::V4),
            before,
            "{args:?} changed rules"
        );
    }
    // No legacy or nft nat rules appeared anywhere else either.
    assert_eq!(
        ns.save(backend, Family::V6).without_empty(),
        Tables::default()
    );
}

/// A bad port, CIDR, UID or GID stops netting-init with exit status 2 and a message naming the
/// flag and the value, before anything is applied.
#[test]
fn bad_values_apply_nothing_nft() {
    check_bad_values_apply_nothing(Backend::Nft);
}

/// As [`bad_values_apply_nothing_nft`], with iptables-legacy.
#[test]
fn bad_values_apply_nothing_legacy() {
    check_bad_values_apply_nothing(Backend::Legacy);
}

/// `--backend auto` uses nft in a fresh namespace and legacy where legacy already holds rules;
/// cleanup with `auto` finds the rules in either.
#[test]
fn auto_detects_the_backend() {
    if !can_run(namespace_problem(Backend::Nft).or_else(|| namespace_problem(Backend::Legacy))) {
        return;
    }
    let netting_in = |ns: &Netns, backend| {
        ns.save(backend, Family::V4)
            .nat()
            .chain("NETTING_OUTPUT")
            .is_some()
    };

    let Some(ns) = namespace(Backend::Nft) else {
        return;
    };
    ns.init_ok(&["--proxy-uid", "1337"]);
    assert!(netting_in(&ns, Backend::Nft));
    assert!(!netting_in(&ns, Backend::Legacy));
    ns.init_ok(&["--cleanup"]);
    assert!(!netting_in(&ns, Backend::Nft));

    let Some(ns) = namespace(Backend::Legacy) else {
        return;
    };
    ns.restore(
        Backend::Legacy,
        Family::V4,
        "*filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    );
    ns.init_ok(&["--proxy-uid", "1337"]);
    assert!(netting_in(&ns, Backend::Legacy));
    assert!(!netting_in(&ns, Backend::Nft));
    ns.init_ok(&["--cleanup"]);
    assert!(!netting_in(&ns, Backend::Legacy));
    assert_eq!(
        ns.save(Backend::Legacy, Family::V4).nat(),
        Tables::parse(EMPTY_NAT).unwrap().nat()
    );
}

/// With `--ipv6`, when committing the ip6tables transaction fails, the iptables rules already
/// committed are removed again: the pod never redirects one family only.
#[test]
fn failed_ipv6_commit_rolls_back_ipv4() {
    let backend = Backend::Nft;
    let Some(ns) = namespace(backend) else { return };
    // A tool directory whose ip6tables-nft-restore checks fine but refuses to commit.
    let dir = tempfile::tempdir().unwrap();
    for tool in support::tools_for(backend).iter().filter(|t| *t != "ip") {
        let real = support::which(tool).unwrap();
        if tool == "ip6tables-nft-restore" {
            let script = format!(
                "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --test ] && exec {} \"$@\"; done\n\
                 echo 'injected commit failure' >&2\nexit 1\n",
                real.display()
            );
            let path = dir.path().join(tool);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            // xtables-nft-multi picks its personality from the name it is called by.
            std::os::unix::fs::symlink(&real, dir.path().join(tool)).unwrap();
        }
    }
    let dir_arg = format!("--iptables-dir={}", dir.path().display());
    let out = ns.init(&["--proxy-uid", "1337", "--ipv6", "--backend=nft", &dir_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("injected commit failure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ns.save(backend, Family::V4).without_empty(),
        Tables::default()
    );
    assert_eq!(
        ns.save(backend, Family::V6).without_empty(),
        Tables::default()
    );
}

fn check_needs_only_net_admin_and_net_raw(backend: Backend) {
    if !can_run(
        support::which("setpriv")
            .is_none()
            .then(|| "setpriv is missing (Debian package util-linux)".to_owned()),
    ) {
        return;
    }
    let Some(ns) = namespace(backend) else { return };
    let binary = env!("CARGO_BIN_EXE_netting-init");
    let flag = backend_flag(backend);
    // Root's capabilities limited to a set: a process started through setpriv only keeps
    // those in its bounding set.
    let limited = |caps: &str, args: &[&str]| {
        let bounding = format!("--bounding-set=-all{caps}");
        let mut all = vec![bounding.as_str(), "--inh-caps=-all", binary];
        all.extend_from_slice(args);
        ns.exec("setpriv", &all).output().unwrap()
    };
    let apply = ["--proxy-uid", "1337", "--ipv6", &flag];

    let out = limited("", &apply);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        ns.save(backend, Family::V4).without_empty(),
        Tables::default()
    );

    let out = limited(",+net_admin,+net_raw", &apply);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ns.save(backend, Family::V6)
            .nat()
            .chain("NETTING_OUTPUT")
            .is_some()
    );

    let out = limited(",+net_admin,+net_raw", &["--cleanup", "--ipv6", &flag]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ns.save(backend, Family::V4).without_empty(),
        Tables::default()
    );
    assert_eq!(
        ns.save(backend, Family::V6).without_empty(),
        Tables::default()
    );
}

/// CAP_NET_ADMIN and CAP_NET_RAW are all netting-init needs to apply and clean up; without
/// them it fails (exit 1) and applies nothing.
#[test]
fn needs_only_net_admin_and_net_raw_nft() {
    check_needs_only_net_admin_and_net_raw(Backend::Nft);
}

/// As [`needs_only_net_admin_and_net_raw_nft`], with iptables-legacy.
#[test]
fn needs_only_net_admin_and_net_raw_legacy() {
    check_needs_only_net_admin_and_net_raw(Backend::Legacy);
}
