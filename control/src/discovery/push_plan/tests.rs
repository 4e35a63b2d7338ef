#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use netting_raft::catalog::{CatalogCommand, ServiceSpec, Source};

use super::*;
use crate::discovery::test_catalog::{self, delete, endpoint, key};

/// `ns/name` with one endpoint and the given team label.
fn put(ns: &str, name: &str, octet: u8, team: &str) -> CatalogCommand {
    CatalogCommand::PutService {
        key: key(ns, name),
        source: Source::Api,
        spec: ServiceSpec {
            labels: BTreeMap::from([("team".to_owned(), team.to_owned())]),
            ..ServiceSpec::default()
        },
        endpoints: vec![endpoint(octet)],
    }
}

fn subscription(namespaces: &[&str], services: &[(&str, &str)]) -> Arc<Subscription> {
    Arc::new(test_catalog::subscription(namespaces, services))
}

/// A catalog with default/web and prod/db, and a planner with three sessions: 1 watches
/// namespace default, 2 watches prod/db by name, 3 watches namespace prod.
fn setup() -> (Catalog, PushPlanner) {
    let mut catalog = Catalog::default();
    catalog.apply(1, &put("default", "web", 1, "a")).unwrap();
    catalog.apply(2, &put("prod", "db", 1, "a")).unwrap();
    let mut planner = PushPlanner::new(&catalog);
    planner.open(1, subscription(&["default"], &[]));
    planner.open(2, subscription(&[], &[("prod", "db")]));
    planner.open(3, subscription(&["prod"], &[]));
    (catalog, planner)
}

fn ids(push: &Push) -> Vec<SessionId> {
    push.targets.iter().map(|(id, _)| *id).collect()
}

/// A change reaches the sessions of its namespace and those that name the service, nobody
/// else, with the new version.
#[test]
fn a_change_reaches_its_subscribers_only() {
    let (mut catalog, mut planner) = setup();
    assert_eq!(planner.pushed_version(), 2);
    catalog.apply(3, &put("prod", "db", 2, "a")).unwrap();
    let push = planner.plan(&catalog);
    assert_eq!(ids(&push), [2, 3]);
    for (_, change) in &push.targets {
        assert_eq!(
            *change,
            Change {
                version: 3,
                reason: PushReason::CatalogChange,
                unchanged_since: None
            }
        );
    }
    assert!(!planner.has_versions_behind());

    catalog.apply(4, &delete("default", "web")).unwrap();
    assert_eq!(ids(&planner.plan(&catalog)), [1]);
}

/// A change sidecars cannot see (a label) is announced as unchanged since the last push, and
/// its sessions are told the version later, unless a real change reaches them first.
#[test]
fn an_invisible_change_is_marked_and_its_version_told_later() {
    let (mut catalog, mut planner) = setup();
    catalog.apply(3, &put("prod", "db", 1, "b")).unwrap();
    let push = planner.plan(&catalog);
    assert_eq!(ids(&push), [2, 3]);
    assert!(
        push.targets
            .iter()
            .all(|(_, c)| c.unchanged_since == Some(2) && c.version == 3)
    );
    assert!(planner.has_versions_behind());

    // A real change for session 1 meanwhile: 2 and 3 still wait for their version.
    catalog.apply(4, &put("default", "web", 2, "a")).unwrap();
    assert_eq!(ids(&planner.plan(&catalog)), [1]);
    let later = planner.versions_only();
    assert_eq!(ids(&later), [2, 3]);
    assert!(later.targets.iter().all(|(_, c)| *c
        == Change {
            version: 4,
            reason: PushReason::VersionOnly,
            unchanged_since: None
        }));
    assert!(!planner.has_versions_behind());
    assert!(planner.versions_only().targets.is_empty());

    // A real change to a session that was behind takes it off the list.
    catalog.apply(5, &put("prod", "db", 1, "c")).unwrap();
    planner.plan(&catalog);
    catalog.apply(6, &put("prod", "db", 3, "c")).unwrap();
    planner.plan(&catalog);
    assert!(planner.versions_only().targets.is_empty());
}

/// A service created and deleted between two pushes is announced as unchanged: a session
/// that connected in between may have seen it.
#[test]
fn created_and_deleted_between_pushes_is_announced_as_unchanged() {
    let (mut catalog, mut planner) = setup();
    catalog.apply(3, &put("default", "tmp", 1, "a")).unwrap();
    catalog.apply(4, &delete("default", "tmp")).unwrap();
    let push = planner.plan(&catalog);
    assert_eq!(ids(&push), [1]);
    assert_eq!(push.targets[0].1.unchanged_since, Some(2));
}

/// When the catalog no longer knows what was deleted since the last push, every session is
/// told to resync.
#[test]
fn lost_tombstones_resync_everyone() {
    let mut catalog = Catalog::with_max_tombstones(1);
    catalog.apply(1, &put("default", "web", 1, "a")).unwrap();
    let mut planner = PushPlanner::new(&catalog);
    planner.open(1, subscription(&["default"], &[]));
    planner.open(2, subscription(&["other"], &[]));
    for (index, name) in [(2, "a"), (4, "b")] {
        catalog.apply(index, &put("default", name, 1, "a")).unwrap();
        catalog.apply(index + 1, &delete("default", name)).unwrap();
    }
    let push = planner.plan(&catalog);
    assert_eq!(ids(&push), [1, 2]);
    assert!(
        push.targets
            .iter()
            .all(|(_, c)| c.reason == PushReason::Resync && c.version == 5)
    );
}

/// A closed session is reached by nothing, and nothing is left of it in the index.
#[test]
fn a_closed_session_is_forgotten() {
    let (mut catalog, mut planner) = setup();
    catalog.apply(3, &put("prod", "db", 1, "b")).unwrap();
    planner.plan(&catalog);
    planner.close(2);
    planner.close(3);
    planner.close(3);
    assert_eq!(planner.sessions(), 1);
    assert!(planner.versions_only().targets.is_empty());
    catalog.apply(4, &put("prod", "db", 2, "b")).unwrap();
    assert!(planner.plan(&catalog).targets.is_empty());
    assert!(!planner.by_namespace.contains_key("prod"));
    assert!(planner.by_service.is_empty());
}
