//! The invariants of the design, checked on what a run recorded after it healed. Each check is
//! a plain function from recorded data to a [`CheckResult`]; each violation names the
//! operations, entries, sidecars, terms or replicas involved.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{History, LedgerWrite, Outcome, SidecarEventKind};
use crate::report::CheckResult;

/// One replica's catalog at the end of the run, as comparable data:
/// `namespace/service` → its endpoints.
pub type CatalogDump = BTreeMap<String, ServiceDump>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDump {
    /// `(address, port, ready, pod)` of each endpoint.
    pub endpoints: BTreeSet<(String, u32, bool, String)>,
    /// Log index that last changed the service.
    pub modify_index: u64,
}

impl ServiceDump {
    /// `address:port` of each endpoint with its readiness: what a sidecar routes with.
    pub fn routes(&self) -> BTreeSet<(String, bool)> {
        self.endpoints
            .iter()
            .map(|(address, port, ready, _)| (endpoint_name(address, *port), *ready))
            .collect()
    }
}

/// `address:port`, with brackets for IPv6 as a socket address prints it.
pub fn endpoint_name(address: &str, port: u32) -> String {
    if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// At most this many violations are listed per check; the count says how many there were.
const LISTED: usize = 50;

fn result(name: &str, detail: String, mut violations: Vec<String>) -> CheckResult {
    let total = violations.len();
    if total > LISTED {
        violations.truncate(LISTED);
        violations.push(format!("... and {} more", total - LISTED));
    }
    CheckResult {
        name: name.to_owned(),
        passed: total == 0,
        detail,
        violations,
    }
}

/// **Nothing acknowledged is lost** (and nothing that certainly failed appears): every ledger
/// entry whose registration was acknowledged, and whose removal was not attempted or certainly
/// failed, is on every replica; an entry whose acknowledged registration was followed by an
/// acknowledged removal is on none; an entry whose registration certainly failed is on none.
/// A registration of unknown outcome may still take effect after a later removal (it may sit
/// in a frozen leader's queue), so such an entry may be either.
pub fn no_lost_writes(ledger: &[LedgerWrite], replicas: &[(usize, CatalogDump)]) -> CheckResult {
    let mut by_entry: HashMap<&str, (Option<&LedgerWrite>, Option<&LedgerWrite>)> = HashMap::new();
    for write in ledger {
        let slot = by_entry.entry(write.entry.as_str()).or_default();
        if write.register {
            slot.0 = Some(write);
        } else {
            // Removals may be tried more than once: one that succeeded decides, else one that
            // may have happened, else they all certainly failed.
            let rank = |w: &LedgerWrite| match w.outcome {
                Outcome::Ok => 2,
                Outcome::Unknown => 1,
                Outcome::Failed => 0,
            };
            if slot.1.is_none_or(|kept| rank(write) > rank(kept)) {
                slot.1 = Some(write);
            }
        }
    }
    let present: Vec<(usize, BTreeSet<String>)> = replicas
        .iter()
        .map(|(index, dump)| {
            let entries = dump
                .iter()
                .flat_map(|(service, s)| {
                    s.endpoints
                        .iter()
                        .map(move |(a, p, _, _)| format!("{service}/{}", endpoint_name(a, *p)))
                })
                .collect();
            (*index, entries)
        })
        .collect();
    let mut violations = Vec::new();
    let mut must_exist = 0usize;
    let mut must_not = 0usize;
    let mut entries: Vec<_> = by_entry.into_iter().collect();
    entries.sort_by_key(|(entry, _)| *entry);
    for (entry, (register, deregister)) in entries {
        let Some(register) = register else { continue };
        let removal = deregister.map(|d| d.outcome);
        let expectation = match (register.outcome, removal) {
            (Outcome::Ok, None | Some(Outcome::Failed)) => Some(true),
            // The writer removes only after the registration's answer, so the order is known.
            (Outcome::Ok, Some(Outcome::Ok)) => Some(false),
            (Outcome::Failed, _) => Some(false),
            _ => None,
        };
        let Some(expected) = expectation else {
            continue;
        };
        if expected {
            must_exist += 1;
        } else {
            must_not += 1;
        }
        for (replica, entries) in &present {
            if entries.contains(entry) == expected {
                continue;
            }
            let why = if expected {
                format!(
                    "lost: registration #{} acknowledged at {} µs (version {}, leader {}) is missing",
                    register.id,
                    register.completed.unwrap_or_default(),
                    show(register.version),
                    show(register.leader),
                )
            } else if let Some(removal) = deregister.filter(|d| d.outcome == Outcome::Ok) {
                format!(
                    "resurrected: removal #{} acknowledged at {} µs (version {}) but the entry is present",
                    removal.id,
                    removal.completed.unwrap_or_default(),
                    show(removal.version),
                )
            } else {
                format!(
                    "phantom: registration #{} certainly failed (never reached a replica) but the entry is present",
                    register.id
                )
            };
            violations.push(format!("{entry} on replica {replica}: {why}"));
        }
    }
    result(
        "no-lost-writes",
        format!(
            "{must_exist} acknowledged entries must be and {must_not} must not be on each of {} replicas",
            replicas.len()
        ),
        violations,
    )
}

fn show(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// **Every replica's catalog is the same** once the run healed and the replicas caught up.
pub fn replicas_equal(replicas: &[(usize, CatalogDump)]) -> CheckResult {
    let mut violations = Vec::new();
    let Some((first_index, first)) = replicas.first() else {
        return result(
            "replicas-equal",
            "no replica answered".to_owned(),
            vec!["no replica's catalog could be read".to_owned()],
        );
    };
    for (index, dump) in &replicas[1..] {
        let names: BTreeSet<&String> = first.keys().chain(dump.keys()).collect();
        for name in names {
            let (a, b) = (first.get(name), dump.get(name));
            if a.map(|s| &s.endpoints) == b.map(|s| &s.endpoints) {
                continue;
            }
            violations.push(match (a, b) {
                (Some(_), None) => format!("{name}: on replica {first_index}, not on {index}"),
                (None, Some(_)) => format!("{name}: on replica {index}, not on {first_index}"),
                (Some(a), Some(b)) => {
                    let only_a: Vec<_> = a.endpoints.difference(&b.endpoints).take(3).collect();
                    let only_b: Vec<_> = b.endpoints.difference(&a.endpoints).take(3).collect();
                    format!(
                        "{name} differs: only on replica {first_index}: {only_a:?}; only on replica {index}: {only_b:?}"
                    )
                }
                (None, None) => continue,
            });
        }
    }
    let services = first.len();
    let endpoints: usize = first.values().map(|s| s.endpoints.len()).sum();
    result(
        "replicas-equal",
        format!(
            "{} replicas compared: {services} services, {endpoints} endpoints",
            replicas.len()
        ),
        violations,
    )
}

/// **Never backwards**: no sidecar applied a version lower than one it had applied (client
/// sidecars), and no replica sent a raw sidecar a version lower than the one it had, or a
/// delta from a version it lacked (raw sidecars).
pub fn sidecars_never_backwards(history: &History) -> CheckResult {
    let mut events: Vec<_> = history.sidecars.iter().collect();
    // Stable: events of one sidecar keep the order they were recorded in.
    events.sort_by_key(|e| (e.sidecar, e.at));
    let mut violations = Vec::new();
    let mut have: HashMap<u32, (String, u64)> = HashMap::new();
    for event in &events {
        let current = have.get(&event.sidecar).cloned();
        if let Some((cluster, version)) = &current
            && *cluster == event.cluster_id
        {
            let who = match event.kind {
                SidecarEventKind::Applied => "applied",
                SidecarEventKind::Received => "was sent",
            };
            if event.version < *version {
                violations.push(format!(
                    "sidecar {} {who} version {} at {} µs after having {version}{}",
                    event.sidecar,
                    event.version,
                    event.at,
                    replica_note(event.replica),
                ));
            }
            if let Some(from) = event.from_version
                && from > *version
            {
                violations.push(format!(
                    "sidecar {} was sent a delta from version {from} to {} at {} µs but had only {version}{}",
                    event.sidecar,
                    event.version,
                    event.at,
                    replica_note(event.replica),
                ));
            }
        }
        let next = match current {
            Some((cluster, version)) if cluster == event.cluster_id => version.max(event.version),
            _ => event.version,
        };
        have.insert(event.sidecar, (event.cluster_id.clone(), next));
    }
    let sidecars = have.len();
    result(
        "sidecars-never-backwards",
        format!(
            "{} versions applied or received by {sidecars} sidecars",
            events.len()
        ),
        violations,
    )
}

fn replica_note(replica: Option<usize>) -> String {
    replica.map_or_else(String::new, |r| format!(" (from replica {r})"))
}

/// What one sidecar holds at the end: its version and the routes of every service it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarFinal {
    pub sidecar: u32,
    pub version: u64,
    /// `None` for raw sidecars, which keep no config: only their version is checked.
    pub services: Option<BTreeMap<String, BTreeSet<(String, bool)>>>,
}

/// **Convergence**: after the last write every sidecar reached the final catalog of its
/// subscription: a version at least that of the last change to it, and (for client sidecars)
/// exactly its services and endpoints.
pub fn sidecars_converged(
    sidecars: &[SidecarFinal],
    subscribed: &BTreeMap<String, ServiceDump>,
) -> CheckResult {
    let final_version = subscribed
        .values()
        .map(|s| s.modify_index)
        .max()
        .unwrap_or(0);
    let expected: BTreeMap<String, BTreeSet<(String, bool)>> = subscribed
        .iter()
        .map(|(name, service)| (name.clone(), service.routes()))
        .collect();
    let mut violations = Vec::new();
    for sidecar in sidecars {
        if sidecar.version < final_version {
            violations.push(format!(
                "sidecar {} ended at version {}, the subscription's last change is at {final_version}",
                sidecar.sidecar, sidecar.version
            ));
            continue;
        }
        if let Some(services) = &sidecar.services
            && *services != expected
        {
            let wrong: Vec<&String> = expected
                .keys()
                .chain(services.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|name| services.get(*name) != expected.get(*name))
                .take(3)
                .collect();
            violations.push(format!(
                "sidecar {} at version {} differs from the final catalog in {wrong:?}",
                sidecar.sidecar, sidecar.version
            ));
        }
    }
    result(
        "sidecars-converged",
        format!(
            "{} sidecars against final version {final_version} of {} subscribed services",
            sidecars.len(),
            subscribed.len()
        ),
        violations,
    )
}

/// **At most one leader per term**, from two sources: replicas that said they lead, and the
/// leader recorded in the id of each applied log entry.
pub fn one_leader_per_term(history: &History) -> CheckResult {
    let mut claimed: BTreeMap<u64, BTreeMap<u64, (usize, u64)>> = BTreeMap::new();
    let mut written: BTreeMap<u64, BTreeMap<u64, (usize, u64)>> = BTreeMap::new();
    for sample in &history.samples {
        if sample.state == "leader" {
            claimed
                .entry(sample.term)
                .or_default()
                .entry(sample.node_id)
                .or_insert((sample.replica, sample.at));
        }
        if let Some((term, leader)) = sample.last_applied {
            written
                .entry(term)
                .or_default()
                .entry(leader)
                .or_insert((sample.replica, sample.at));
        }
    }
    let mut violations = Vec::new();
    for (source, terms) in [
        ("said they lead", &claimed),
        ("wrote applied entries", &written),
    ] {
        for (term, leaders) in terms {
            if leaders.len() > 1 {
                let who: Vec<String> = leaders
                    .iter()
                    .map(|(node, (replica, at))| {
                        format!("node {node} (seen on replica {replica} at {at} µs)")
                    })
                    .collect();
                violations.push(format!(
                    "term {term}: {} nodes {source}: {}",
                    leaders.len(),
                    who.join(", ")
                ));
            }
        }
    }
    result(
        "one-leader-per-term",
        format!(
            "{} terms with a leader seen in {} samples",
            claimed.len(),
            history.samples.len()
        ),
        violations,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::{ReplicaSample, SidecarEvent};

    fn ledger(id: u64, entry: &str, register: bool, outcome: Outcome) -> LedgerWrite {
        LedgerWrite {
            id,
            client: 0,
            entry: entry.to_owned(),
            register,
            invoked: id * 10,
            completed: (outcome != Outcome::Unknown).then_some(id * 10 + 5),
            outcome,
            replica: 0,
            version: (outcome == Outcome::Ok).then_some(id),
            leader: (outcome == Outcome::Ok).then_some(1),
        }
    }

    fn dump(entries: &[&str]) -> CatalogDump {
        let mut dump = CatalogDump::new();
        for entry in entries {
            let (service, endpoint) = entry.rsplit_once('/').unwrap();
            let (address, port) = endpoint.rsplit_once(':').unwrap();
            dump.entry(service.to_owned())
                .or_default()
                .endpoints
                .insert((
                    address.to_owned(),
                    port.parse().unwrap(),
                    true,
                    String::new(),
                ));
        }
        dump
    }

    #[test]
    fn an_acknowledged_entry_missing_on_one_replica_is_a_lost_write() {
        let writes = vec![
            ledger(1, "ns/s/10.0.0.1:1", true, Outcome::Ok),
            ledger(2, "ns/s/10.0.0.2:1", true, Outcome::Ok),
        ];
        let good = dump(&["ns/s/10.0.0.1:1", "ns/s/10.0.0.2:1"]);
        let bad = dump(&["ns/s/10.0.0.1:1"]);
        let passed = no_lost_writes(&writes, &[(0, good.clone()), (1, good.clone())]);
        assert!(passed.passed, "{passed:?}");
        let failed = no_lost_writes(&writes, &[(0, good), (1, bad)]);
        assert!(!failed.passed);
        assert_eq!(failed.violations.len(), 1);
        assert!(
            failed.violations[0].contains("ns/s/10.0.0.2:1 on replica 1: lost: registration #2"),
            "{:?}",
            failed.violations
        );
    }

    #[test]
    fn removals_and_unknown_outcomes_are_judged_by_what_is_certain() {
        let writes = vec![
            ledger(1, "ns/s/10.0.0.1:1", true, Outcome::Ok),
            ledger(2, "ns/s/10.0.0.1:1", false, Outcome::Ok),
            ledger(3, "ns/s/10.0.0.2:1", true, Outcome::Unknown),
            // Removed after a registration of unknown outcome: that registration may land
            // later still, so either state is fine.
            ledger(7, "ns/s/10.0.0.2:1", false, Outcome::Ok),
            ledger(4, "ns/s/10.0.0.3:1", true, Outcome::Ok),
            ledger(5, "ns/s/10.0.0.3:1", false, Outcome::Unknown),
            ledger(6, "ns/s/10.0.0.4:1", true, Outcome::Failed),
        ];
        // Unknown ones either way; the removed entry and the failed one absent.
        let mut writes = writes;
        // A retried removal: an unknown try, then failed ones. The unknown one may have
        // happened, so the acknowledged registration of entry 5 need not be there.
        writes.push(ledger(8, "ns/s/10.0.0.5:1", true, Outcome::Ok));
        writes.push(ledger(9, "ns/s/10.0.0.5:1", false, Outcome::Unknown));
        writes.push(ledger(10, "ns/s/10.0.0.5:1", false, Outcome::Failed));
        let ok = dump(&["ns/s/10.0.0.2:1"]);
        let also_ok = dump(&["ns/s/10.0.0.3:1"]);
        assert!(no_lost_writes(&writes, &[(0, ok), (1, also_ok)]).passed);
        let resurrected = dump(&["ns/s/10.0.0.1:1", "ns/s/10.0.0.4:1"]);
        let check = no_lost_writes(&writes, &[(0, resurrected)]);
        assert_eq!(check.violations.len(), 2, "{check:?}");
        assert!(check.violations[0].contains("resurrected: removal #2"));
        assert!(check.violations[1].contains("phantom: registration #6"));
    }

    #[test]
    fn replicas_that_differ_are_named() {
        let a = dump(&["ns/s/10.0.0.1:1", "ns/t/10.0.0.9:1"]);
        let b = dump(&["ns/s/10.0.0.2:1"]);
        assert!(replicas_equal(&[(0, a.clone()), (1, a.clone())]).passed);
        let check = replicas_equal(&[(0, a), (2, b)]);
        assert!(!check.passed);
        assert!(check.violations[0].starts_with("ns/s differs"));
        assert_eq!(check.violations[1], "ns/t: on replica 0, not on 2");
    }

    fn event(sidecar: u32, at: u64, version: u64, kind: SidecarEventKind) -> SidecarEvent {
        SidecarEvent {
            sidecar,
            at,
            cluster_id: "c1".to_owned(),
            version,
            replica: Some(1),
            from_version: None,
            kind,
        }
    }

    #[test]
    fn a_version_going_backwards_is_found_per_sidecar() {
        let mut history = History {
            sidecars: vec![
                event(0, 10, 5, SidecarEventKind::Applied),
                event(1, 11, 9, SidecarEventKind::Received),
                event(0, 20, 7, SidecarEventKind::Applied),
                event(1, 21, 9, SidecarEventKind::Received),
            ],
            ..History::default()
        };
        assert!(sidecars_never_backwards(&history).passed);
        history
            .sidecars
            .push(event(1, 30, 8, SidecarEventKind::Received));
        let check = sidecars_never_backwards(&history);
        assert_eq!(
            check.violations,
            ["sidecar 1 was sent version 8 at 30 µs after having 9 (from replica 1)"]
        );
        // Another cluster (rebuilt from nothing) restarts versions: not a regression.
        let mut rebuilt = event(0, 40, 1, SidecarEventKind::Applied);
        rebuilt.cluster_id = "c2".to_owned();
        history.sidecars.push(rebuilt);
        assert_eq!(sidecars_never_backwards(&history).violations.len(), 1);
    }

    #[test]
    fn a_delta_from_a_version_the_sidecar_lacks_is_a_violation() {
        let mut delta = event(0, 20, 12, SidecarEventKind::Received);
        delta.from_version = Some(10);
        let history = History {
            sidecars: vec![event(0, 10, 9, SidecarEventKind::Received), delta],
            ..History::default()
        };
        let check = sidecars_never_backwards(&history);
        assert!(
            check.violations[0].contains("delta from version 10"),
            "{check:?}"
        );
    }

    #[test]
    fn convergence_needs_the_version_and_the_content() {
        let mut subscribed = BTreeMap::new();
        let mut service = ServiceDump {
            modify_index: 40,
            ..ServiceDump::default()
        };
        service
            .endpoints
            .insert(("100.64.0.1".to_owned(), 80, true, "w1-1".to_owned()));
        subscribed.insert("chaos/reg-0".to_owned(), service);
        let routes: BTreeMap<_, _> = [(
            "chaos/reg-0".to_owned(),
            [("100.64.0.1:80".to_owned(), true)].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        let good = SidecarFinal {
            sidecar: 0,
            version: 41,
            services: Some(routes.clone()),
        };
        let raw = SidecarFinal {
            sidecar: 1,
            version: 40,
            services: None,
        };
        assert!(sidecars_converged(&[good.clone(), raw.clone()], &subscribed).passed);
        let behind = SidecarFinal { version: 39, ..raw };
        let wrong = SidecarFinal {
            services: Some(BTreeMap::new()),
            ..good
        };
        let check = sidecars_converged(&[behind, wrong], &subscribed);
        assert_eq!(check.violations.len(), 2, "{check:?}");
        assert!(check.violations[0].contains("ended at version 39"));
        assert!(check.violations[1].contains("differs from the final catalog"));
    }

    fn sample(replica: usize, node: u64, term: u64, state: &str, written_by: u64) -> ReplicaSample {
        ReplicaSample {
            replica,
            node_id: node,
            at: 1,
            state: state.to_owned(),
            term,
            leader: Some(written_by),
            applied_index: 1,
            catalog_version: 1,
            last_applied: Some((term, written_by)),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_named() {
        let mut history = History {
            samples: vec![
                sample(0, 1, 3, "leader", 1),
                sample(1, 2, 3, "follower", 1),
                sample(1, 2, 4, "leader", 2),
            ],
            ..History::default()
        };
        assert!(one_leader_per_term(&history).passed);
        history.samples.push(sample(2, 3, 4, "leader", 3));
        let check = one_leader_per_term(&history);
        assert_eq!(check.violations.len(), 2, "{check:?}");
        assert!(check.violations[0].starts_with("term 4: 2 nodes said they lead"));
        assert!(check.violations[1].starts_with("term 4: 2 nodes wrote applied entries"));
    }
}
