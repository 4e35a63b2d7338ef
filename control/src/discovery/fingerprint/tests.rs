#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use netting_raft::catalog::{
    Catalog, CatalogCommand, EndpointId, EndpointSpec, LoadBalancer, ServicePolicy, ServicePort,
    ServiceSpec, Source,
};

use super::*;
use crate::discovery::test_catalog::{delete, key, register};
use crate::discovery::view::ServiceView;

/// The fingerprint of `service` computed from scratch, with nothing cached.
fn fingerprint(service: &netting_raft::catalog::Service) -> u64 {
    ServicePrint::of(service, &[]).print
}

fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.apply(1, &register("default", "web", 1)).unwrap();
    catalog.apply(2, &register("default", "web", 2)).unwrap();
    catalog
}

/// Fingerprints change with what sidecars use, not with labels or owning pods.
#[test]
fn fingerprint_ignores_unused_fields() {
    let catalog = catalog();
    let web = catalog.get(&key("default", "web")).unwrap().clone();
    let mut relabelled = web.clone();
    relabelled.spec.labels = BTreeMap::from([("team".into(), "x".into())]);
    relabelled.source = Source::File;
    for e in relabelled.endpoints.values_mut() {
        e.spec.pod = Some("web-0".into());
    }
    assert_eq!(fingerprint(&web), fingerprint(&relabelled));

    let mut retried = web.clone();
    retried.spec.policy.max_retries = 3;
    assert_ne!(fingerprint(&web), fingerprint(&retried));
    let mut unready = web.clone();
    for e in unready.endpoints.values_mut() {
        e.spec.ready = false;
    }
    assert_ne!(fingerprint(&web), fingerprint(&unready));
    let mut zoned = web.clone();
    if let Some(e) = zoned.endpoints.values_mut().next() {
        e.spec.zone = Some("zone-b".into());
    }
    assert_ne!(fingerprint(&web), fingerprint(&zoned));
}

/// A service recorded again after a change nobody sees is not a change; after one a sidecar
/// sees, it is.
#[test]
fn update_tells_changes_sidecars_see() {
    let mut catalog = catalog();
    let web = key("default", "web");
    let mut prints = Fingerprints::default();
    assert!(prints.update(catalog.get(&web).unwrap()), "first record");
    assert!(
        !prints.update(catalog.get(&web).unwrap()),
        "nothing changed"
    );

    let mut relabel = EndpointSpec {
        pod: Some("web-1".into()),
        ..crate::discovery::test_catalog::endpoint(1)
    };
    catalog
        .apply(
            3,
            &CatalogCommand::RegisterEndpoint {
                key: web.clone(),
                source: Source::Api,
                endpoint: relabel.clone(),
                spec: None,
            },
        )
        .unwrap();
    assert!(
        !prints.update(catalog.get(&web).unwrap()),
        "owning pod only"
    );

    relabel.ready = false;
    catalog
        .apply(
            4,
            &CatalogCommand::RegisterEndpoint {
                key: web.clone(),
                source: Source::Api,
                endpoint: relabel,
                spec: None,
            },
        )
        .unwrap();
    assert!(prints.update(catalog.get(&web).unwrap()), "readiness");

    assert!(prints.remove(&web));
    assert!(!prints.remove(&web));
    assert!(
        prints.update(catalog.get(&web).unwrap()),
        "forgotten, so new"
    );
}

/// A small deterministic generator, so that the walk below is the same on every run.
struct Steps(u64);

impl Steps {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn random_command(steps: &mut Steps) -> CatalogCommand {
    let name = ["a", "b", "c"][steps.below(3) as usize];
    let key = key("default", name);
    let endpoint = |steps: &mut Steps| EndpointSpec {
        id: EndpointId {
            address: format!("10.0.0.{}", steps.below(6)).parse().unwrap(),
            port: 80 + steps.below(2) as u16,
        },
        ready: steps.below(4) != 0,
        zone: [None, Some("zone-a".to_owned())][steps.below(2) as usize].clone(),
        pod: [None, Some("pod-0".to_owned()), Some("pod-1".to_owned())][steps.below(3) as usize]
            .clone(),
    };
    let spec = |steps: &mut Steps| ServiceSpec {
        ports: (0..steps.below(2))
            .map(|i| ServicePort {
                name: format!("p{i}"),
                port: 80 + i as u16,
                protocol: Default::default(),
            })
            .collect(),
        labels: BTreeMap::from([("v".to_owned(), steps.below(3).to_string())]),
        policy: ServicePolicy {
            max_retries: steps.below(2) as u32,
            load_balancer: [None, Some(LoadBalancer::RoundRobin)][steps.below(2) as usize],
            ..Default::default()
        },
    };
    match steps.below(10) {
        0..=4 => CatalogCommand::RegisterEndpoint {
            key,
            source: Source::Api,
            endpoint: endpoint(steps),
            spec: (steps.below(4) == 0).then(|| spec(steps)),
        },
        5..=6 => CatalogCommand::DeregisterEndpoint {
            key,
            endpoint: endpoint(steps).id,
            source: Some(Source::Api),
        },
        7..=8 => CatalogCommand::PutService {
            key,
            source: Source::Api,
            spec: spec(steps),
            endpoints: (0..steps.below(4)).map(|_| endpoint(steps)).collect(),
        },
        _ => delete("default", name),
    }
}

/// Over a long walk of random changes, recorded a few at a time as the pusher does, the
/// kept fingerprint is the one computed from scratch, and a change is reported exactly when
/// the view sidecars are sent differs from the one at the last record.
#[test]
fn kept_prints_follow_the_view_through_random_changes() {
    let mut steps = Steps(0x9e37_79b9_7f4a_7c15);
    let mut catalog = Catalog::default();
    let mut prints = Fingerprints::default();
    let mut views: HashMap<ServiceKey, ServiceView> = HashMap::new();
    let (mut changes, mut unchanged) = (0, 0);
    let mut index = 0;
    for _round in 0..2_000 {
        for _ in 0..=steps.below(3) {
            index += 1;
            // Refused commands (unknown endpoint or service) change nothing, as in the log.
            let _ = catalog.apply(index, &random_command(&mut steps));
        }
        for service in catalog.list(None) {
            let view = ServiceView::of(service);
            let expected = views.get(&service.key) != Some(&view);
            assert_eq!(
                prints.update(service),
                expected,
                "{} at index {index}",
                service.key
            );
            assert_eq!(prints.get(&service.key), Some(fingerprint(service)));
            if expected {
                changes += 1;
            } else if service.modify_index > index.saturating_sub(3) {
                unchanged += 1;
            }
            views.insert(service.key.clone(), view);
        }
        views.retain(|key, _| {
            let kept = catalog.get(key).is_some();
            if !kept {
                assert!(prints.remove(key));
            }
            kept
        });
    }
    // The walk exercised both answers, not only one.
    assert!(changes > 500, "{changes} changes");
    assert!(unchanged > 100, "{unchanged} changes no sidecar sees");
}
