use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use super::*;
use crate::config::{Action, Cidr};
use crate::xtables::BackendChoice;

const FRESH: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
";

/// In-memory iptables: one [`Tables`] per back end and family, interpreted by the model, with
/// fault hooks.
#[derive(Debug, Default)]
struct Fake {
    state: RefCell<BTreeMap<(Backend, Family), Tables>>,
    /// Back ends whose tools fail.
    unusable: Vec<Backend>,
    /// ip6tables fails everywhere.
    no_v6: bool,
    /// Committing this family fails.
    fail_commit: Option<Family>,
    /// Restore input applied to the state just before the next commit (another writer).
    race: RefCell<Option<String>>,
    /// `save`/`check`/`commit` with back end and family, in order.
    calls: RefCell<Vec<String>>,
}

fn failed(binary: String) -> ToolError {
    ToolError::Failed {
        binary,
        status: std::process::ExitStatus::from_raw(256),
        stderr: "refused".to_owned(),
    }
}

impl Fake {
    fn new() -> Self {
        let fake = Self::default();
        for backend in [Backend::Nft, Backend::Legacy] {
            for family in [Family::V4, Family::V6] {
                fake.set(backend, family, FRESH);
            }
        }
        fake
    }

    fn set(&self, backend: Backend, family: Family, save: &str) {
        self.state
            .borrow_mut()
            .insert((backend, family), Tables::parse(save).unwrap());
    }

    fn get(&self, backend: Backend, family: Family) -> Tables {
        self.state.borrow()[&(backend, family)].clone()
    }

    fn commits(&self) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("commit"))
            .count()
    }
}

impl Xtables for Fake {
    fn save(&self, backend: Backend, family: Family) -> Result<String, ToolError> {
        self.calls
            .borrow_mut()
            .push(format!("save {backend} {}", family.tool()));
        if self.unusable.contains(&backend) || (self.no_v6 && family == Family::V6) {
            return Err(failed(binary_name(backend, family, "save")));
        }
        Ok(self.get(backend, family).to_string())
    }

    fn restore(
        &self,
        backend: Backend,
        family: Family,
        input: &str,
        check_only: bool,
    ) -> Result<(), ToolError> {
        let verb = if check_only { "check" } else { "commit" };
        self.calls
            .borrow_mut()
            .push(format!("{verb} {backend} {}", family.tool()));
        let binary = binary_name(backend, family, "restore");
        if !check_only {
            if let Some(other) = self.race.borrow_mut().take() {
                let raced = self.get(backend, family).restore(&other).unwrap();
                self.state.borrow_mut().insert((backend, family), raced);
            }
            if self.fail_commit == Some(family) {
                return Err(failed(binary));
            }
        }
        let next = self
            .get(backend, family)
            .restore(input)
            .map_err(|_| failed(binary))?;
        if !check_only {
            self.state.borrow_mut().insert((backend, family), next);
        }
        Ok(())
    }
}

fn apply_invocation(config: Config) -> Invocation {
    Invocation {
        action: Action::Apply(config),
        backend: BackendChoice::Auto,
        dry_run: false,
        iptables_dir: None,
    }
}

fn cleanup_invocation(ipv6: bool) -> Invocation {
    Invocation {
        action: Action::Cleanup { ipv6 },
        backend: BackendChoice::Auto,
        dry_run: false,
        iptables_dir: None,
    }
}

fn dual_stack() -> Config {
    let mut c = Config::new(1337);
    c.ipv6 = true;
    c.exclude_outbound_cidrs = vec![Cidr::parse("fd00::/8").unwrap()];
    c
}

fn expected(config: &Config, family: Family) -> Tables {
    Tables::parse(FRESH)
        .unwrap()
        .restore(&rules::rules(config, family).fresh_input())
        .unwrap()
}

/// The back end already holding more rules wins; a tie or nothing gives nft; an unusable one
/// is skipped; with none usable the error names both.
#[test]
fn backend_detection() {
    let fake = Fake::new();
    assert_eq!(detect_backend(&fake).unwrap(), Backend::Nft);

    fake.set(
        Backend::Legacy,
        Family::V6,
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n",
    );
    assert_eq!(detect_backend(&fake).unwrap(), Backend::Legacy);

    fake.set(
        Backend::Nft,
        Family::V4,
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n",
    );
    assert_eq!(detect_backend(&fake).unwrap(), Backend::Nft);

    let fake = Fake {
        unusable: vec![Backend::Nft],
        ..Fake::new()
    };
    assert_eq!(detect_backend(&fake).unwrap(), Backend::Legacy);

    let fake = Fake {
        unusable: vec![Backend::Nft, Backend::Legacy],
        ..Fake::new()
    };
    let err = detect_backend(&fake).unwrap_err().to_string();
    assert!(
        err.contains("iptables-nft-save") && err.contains("iptables-legacy-save"),
        "{err}"
    );
}

/// Applying installs the rules of the golden renderings; applying again changes nothing.
#[test]
fn apply_is_idempotent() {
    let fake = Fake::new();
    let inv = apply_invocation(dual_stack());
    run(&inv, &fake, &mut Vec::new()).unwrap();
    let once = (
        fake.get(Backend::Nft, Family::V4),
        fake.get(Backend::Nft, Family::V6),
    );
    assert_eq!(once.0, expected(&dual_stack(), Family::V4));
    assert_eq!(once.1, expected(&dual_stack(), Family::V6));
    run(&inv, &fake, &mut Vec::new()).unwrap();
    assert_eq!(
        (
            fake.get(Backend::Nft, Family::V4),
            fake.get(Backend::Nft, Family::V6)
        ),
        once
    );
    assert_eq!(
        fake.get(Backend::Legacy, Family::V4),
        Tables::parse(FRESH).unwrap()
    );
}

/// Both families are checked before either is committed.
#[test]
fn checks_before_committing() {
    let fake = Fake::new();
    run(&apply_invocation(dual_stack()), &fake, &mut Vec::new()).unwrap();
    let calls = fake.calls.borrow();
    let writes: Vec<&str> = calls
        .iter()
        .filter(|c| !c.starts_with("save"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        writes,
        [
            "check nft iptables",
            "check nft ip6tables",
            "commit nft iptables",
            "commit nft ip6tables"
        ]
    );
}

/// If the IPv6 commit fails, the IPv4 rules already committed are removed again.
#[test]
fn failed_second_family_rolls_back_the_first() {
    let fake = Fake {
        fail_commit: Some(Family::V6),
        ..Fake::new()
    };
    let err = run(&apply_invocation(dual_stack()), &fake, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("ip6tables"), "{err}");
    assert_eq!(
        fake.get(Backend::Nft, Family::V4),
        Tables::parse(FRESH).unwrap()
    );
    assert_eq!(
        fake.get(Backend::Nft, Family::V6),
        Tables::parse(FRESH).unwrap()
    );
}

/// A commit that fails because another writer changed the table is rebuilt and retried.
#[test]
fn retries_once_when_the_table_changed() {
    let fake = Fake::new();
    fake.set(
        Backend::Nft,
        Family::V4,
        &FRESH.replace(
            "COMMIT",
            ":NETTING_OUTPUT - [0:0]\n-A OUTPUT -j NETTING_OUTPUT\nCOMMIT",
        ),
    );
    // Between our read and our commit, someone removes the stale jump our input deletes.
    *fake.race.borrow_mut() = Some("*nat\n-D OUTPUT -j NETTING_OUTPUT\nCOMMIT\n".to_owned());
    run(&apply_invocation(Config::new(1337)), &fake, &mut Vec::new()).unwrap();
    assert_eq!(fake.commits(), 2);
    let nat = fake.get(Backend::Nft, Family::V4).nat();
    assert_eq!(
        nat.chain("OUTPUT").unwrap().rules,
        ["-p tcp -j NETTING_OUTPUT"]
    );
}

/// A commit refused on an unchanged table is not retried.
#[test]
fn no_retry_without_a_change() {
    let fake = Fake {
        fail_commit: Some(Family::V4),
        ..Fake::new()
    };
    assert!(run(&apply_invocation(Config::new(1337)), &fake, &mut Vec::new()).is_err());
    assert_eq!(fake.commits(), 1);
}

/// A dry run prints the transaction for the current state and writes nothing.
#[test]
fn dry_run_writes_nothing() {
    let fake = Fake::new();
    let mut inv = apply_invocation(dual_stack());
    inv.dry_run = true;
    let mut out = Vec::new();
    run(&inv, &fake, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = format!(
        "# iptables-nft-restore --noflush --wait 10\n{}# ip6tables-nft-restore --noflush --wait 10\n{}",
        rules::rules(&dual_stack(), Family::V4).fresh_input(),
        rules::rules(&dual_stack(), Family::V6).fresh_input()
    );
    assert_eq!(text, want);
    assert!(fake.calls.borrow().iter().all(|c| c.starts_with("save")));
}

/// Without access to iptables a dry run still shows the rules (for an empty table).
#[test]
fn dry_run_without_tools() {
    let fake = Fake {
        unusable: vec![Backend::Nft, Backend::Legacy],
        ..Fake::new()
    };
    let mut inv = apply_invocation(Config::new(1337));
    inv.dry_run = true;
    let mut out = Vec::new();
    run(&inv, &fake, &mut out).unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .ends_with(&rules::rules(&Config::new(1337), Family::V4).fresh_input())
    );
    // Without --dry-run the same situation is an error.
    inv.dry_run = false;
    assert!(run(&inv, &fake, &mut Vec::new()).is_err());
}

/// Cleanup with `auto` removes Netting's chains from whichever back end holds them.
#[test]
fn cleanup_looks_in_both_backends() {
    let fake = Fake::new();
    let mut inv = apply_invocation(dual_stack());
    inv.backend = BackendChoice::Legacy;
    run(&inv, &fake, &mut Vec::new()).unwrap();
    assert_ne!(
        fake.get(Backend::Legacy, Family::V6),
        Tables::parse(FRESH).unwrap()
    );
    run(&cleanup_invocation(false), &fake, &mut Vec::new()).unwrap();
    for family in [Family::V4, Family::V6] {
        for backend in [Backend::Nft, Backend::Legacy] {
            assert_eq!(fake.get(backend, family), Tables::parse(FRESH).unwrap());
        }
    }
}

/// Cleanup with nothing to remove writes nothing, and succeeds.
#[test]
fn cleanup_of_nothing() {
    let fake = Fake::new();
    run(&cleanup_invocation(true), &fake, &mut Vec::new()).unwrap();
    assert_eq!(fake.commits(), 0);
}

/// ip6tables being unreadable is only an error for cleanup when --ipv6 was asked for.
#[test]
fn cleanup_ipv6_tolerance() {
    let fake = Fake {
        no_v6: true,
        ..Fake::new()
    };
    run(&cleanup_invocation(false), &fake, &mut Vec::new()).unwrap();
    assert!(run(&cleanup_invocation(true), &fake, &mut Vec::new()).is_err());
}

/// A cleanup dry run prints the removal and removes nothing.
#[test]
fn cleanup_dry_run() {
    let fake = Fake::new();
    run(&apply_invocation(Config::new(1337)), &fake, &mut Vec::new()).unwrap();
    let applied = fake.get(Backend::Nft, Family::V4);
    let mut inv = cleanup_invocation(false);
    inv.dry_run = true;
    let mut out = Vec::new();
    run(&inv, &fake, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("# iptables-nft-restore --noflush --wait 10\n*nat\n"),
        "{text}"
    );
    assert!(text.contains("-D PREROUTING -p tcp -j NETTING_INBOUND\n"));
    assert!(text.contains("-X NETTING_OUTPUT"));
    assert_eq!(fake.get(Backend::Nft, Family::V4), applied);
}
