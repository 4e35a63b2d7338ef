#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use netting_raft::catalog::LoadBalancer;

use super::*;

const FILE: &str = r#"
services:
  - namespace: default
    name: web
    ports: [{ name: http, port: 80, protocol: http }]
    labels: { app: web }
    policy: { request_timeout_ms: 1000, max_retries: 2, load_balancer: p2c_ewma }
    endpoints:
      - { address: 10.0.0.1, port: 8080, zone: a, pod: web-0 }
      - { address: "fd00::1", port: 8080, ready: false }
  - name: api
"#;

fn apply_all(catalog: &mut Catalog, commands: &[CatalogCommand], mut index: u64) -> u64 {
    for command in commands {
        index += 1;
        catalog.apply(index, command).unwrap();
    }
    index
}

/// A registration through the API, which the file must leave alone.
fn api_owned(name: &str) -> CatalogCommand {
    CatalogCommand::RegisterEndpoint {
        key: ServiceKey::new("default", name).unwrap(),
        source: Source::Api,
        endpoint: EndpointSpec {
            id: EndpointId {
                address: "10.1.1.1".parse().unwrap(),
                port: 1,
            },
            ready: true,
            zone: None,
            pod: None,
        },
        spec: None,
    }
}

/// A valid file becomes validated domain services, namespace defaulting to "default".
#[test]
fn parses_services() {
    let services = parse(Path::new("c.yaml"), FILE).unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].endpoints.len(), 2);
    assert!(!services[0].endpoints[1].ready);
    assert_eq!(
        services[0].spec.policy.load_balancer,
        Some(LoadBalancer::P2cEwma)
    );
    assert_eq!(services[1].key.namespace, "default");
}

/// A file that does not parse reports file, line and column.
#[test]
fn syntax_error_has_position() {
    let err = parse(
        Path::new("c.yaml"),
        "services:\n  - name: web\n    ports: [\n",
    )
    .unwrap_err();
    assert_eq!(err.path, "c.yaml");
    assert!(err.line.is_some() && err.column.is_some(), "{err}");
    assert!(err.to_string().starts_with("c.yaml:"), "{err}");
}

/// An empty file (or one of only comments) is refused rather than read as "no services":
/// it is usually an in-place overwrite caught between truncate and write.
#[test]
fn empty_file_is_refused() {
    for content in ["", "\n  \n", "# nothing yet\n---\n"] {
        let err = parse(Path::new("c.yaml"), content).unwrap_err();
        assert!(err.message.contains("empty"), "{content:?}: {err}");
    }
    assert!(
        parse(Path::new("c.yaml"), "services: []\n")
            .unwrap()
            .is_empty()
    );
}

/// Semantic errors name the service and the field, and nothing of the file is used.
#[test]
fn invalid_fields_are_named() {
    let cases = [
        ("services: [{name: Web}]", "service"),
        (
            "services: [{name: web, endpoints: [{address: x, port: 1}]}]",
            "endpoints[0].address",
        ),
        (
            "services: [{name: web, endpoints: [{address: 10.0.0.1, port: 0}]}]",
            "endpoints[0].port",
        ),
        (
            "services: [{name: web, ports: [{port: 70000}]}]",
            "ports[0].port",
        ),
        (
            "services: [{name: web, policy: {load_balancer: random}}]",
            "policy.load_balancer",
        ),
        ("services: [{name: web}, {name: web}]", "listed twice"),
        ("services: [{name: web, colour: blue}]", "colour"),
    ];
    for (content, needle) in cases {
        let err = parse(Path::new("c.yaml"), content).unwrap_err();
        assert!(err.to_string().contains(needle), "{content}: {err}");
    }
}

/// Reconciling puts new services, skips up-to-date ones and deletes only file-owned services
/// that disappeared from the file.
#[test]
fn reconcile_diffs_file_owned_services() {
    let mut catalog = Catalog::default();
    let mut index = apply_all(&mut catalog, &[api_owned("legacy")], 0);

    let desired = parse(Path::new("c.yaml"), FILE).unwrap();
    let first = reconcile(&catalog, &desired).commands;
    assert_eq!(first.len(), 2);
    index = apply_all(&mut catalog, &first, index);
    assert_eq!(
        reconcile(&catalog, &desired),
        Reconcile::default(),
        "a second pass proposes nothing"
    );

    let only_web = parse(Path::new("c.yaml"), "services: [{name: web}]").unwrap();
    let second = reconcile(&catalog, &only_web).commands;
    let kinds: Vec<_> = second.iter().map(CatalogCommand::kind).collect();
    assert_eq!(kinds, vec!["put_service", "delete_service"]);
    apply_all(&mut catalog, &second, index);
    assert!(
        catalog
            .get(&ServiceKey::new("default", "legacy").unwrap())
            .is_some()
    );
    assert!(
        catalog
            .get(&ServiceKey::new("default", "api").unwrap())
            .is_none()
    );
}

/// A service the file lists but the API registered is left to the API: nothing is proposed for
/// it, and it is reported as a conflict naming its owner.
#[test]
fn reconcile_leaves_services_other_sources_own() {
    let mut catalog = Catalog::default();
    apply_all(&mut catalog, &[api_owned("web")], 0);
    let desired = parse(Path::new("c.yaml"), FILE).unwrap();
    let plan = reconcile(&catalog, &desired);
    assert_eq!(
        plan.conflicts,
        vec![(ServiceKey::new("default", "web").unwrap(), Source::Api)]
    );
    let proposed: Vec<_> = plan
        .commands
        .iter()
        .map(|c| match c {
            CatalogCommand::PutService { key, .. } => key.name.clone(),
            other => other.kind().to_owned(),
        })
        .collect();
    assert_eq!(proposed, vec!["api"]);
}
