#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

use super::*;
use crate::ctl::args::{Cli, Command};

fn register_args(extra: &[&str]) -> RegisterArgs {
    let args = [
        "nettingctl",
        "catalog",
        "register",
        "shop/web",
        "--address",
        "10.0.0.7",
        "--port",
        "8080",
    ];
    let cli = Cli::try_parse_from(args.iter().chain(extra)).unwrap();
    match cli.command {
        Command::Catalog(CatalogCommand::Register(args)) => args,
        other => panic!("wrong command {other:?}"),
    }
}

fn sample_service() -> Service {
    Service {
        namespace: "shop".into(),
        name: "web".into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8080,
            protocol: String::new(),
        }],
        labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
        endpoints: vec![
            Endpoint {
                address: "10.0.0.10".into(),
                port: 8080,
                ready: false,
                zone: String::new(),
                pod: "web-1".into(),
                modify_index: 12,
            },
            Endpoint {
                address: "10.0.0.9".into(),
                port: 8080,
                ready: true,
                zone: "eu-1a".into(),
                pod: String::new(),
                modify_index: 11,
            },
        ],
        policy: Some(ServicePolicy {
            request_timeout_ms: 0,
            max_retries: 2,
            load_balancer: String::new(),
        }),
        source: "api".into(),
        create_index: 3,
        modify_index: 12,
    }
}

/// Without policy flags no policy is sent (the service keeps its own); with any, all of it is sent.
#[test]
fn register_sends_policy_only_when_asked() {
    let request = register_request(&register_args(&[])).unwrap();
    assert_eq!(request.policy, None);
    assert!(request.ports.is_empty() && request.labels.is_empty());
    let endpoint = request.endpoint.unwrap();
    assert_eq!(
        (endpoint.address.as_str(), endpoint.port, endpoint.ready),
        ("10.0.0.7", 8080, true)
    );

    let request = register_request(&register_args(&[
        "--max-retries",
        "3",
        "--service-port",
        "web:80",
    ]))
    .unwrap();
    assert_eq!(
        request.policy,
        Some(ServicePolicy {
            request_timeout_ms: 0,
            max_retries: 3,
            load_balancer: String::new()
        })
    );
    assert_eq!(request.ports[0].protocol, "tcp");
}

/// A label key or service port given twice is refused as a usage error instead of one silently winning.
#[test]
fn register_refuses_duplicates() {
    for extra in [
        &["--label", "a=1", "--label", "a=2"][..],
        &["--service-port", "http:80", "--service-port", "http:81"],
        &["--service-port", "a:80", "--service-port", "b:80"],
    ] {
        let err = register_request(&register_args(extra)).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{extra:?}: {err}");
    }
}

/// The whole service is deregistered only with --whole-service.
#[test]
fn deregister_request_targets_endpoint_or_whole_service() {
    let mut args = DeregisterArgs {
        service: ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
        },
        address: Some("::1".parse().unwrap()),
        port: Some(80),
        whole_service: false,
    };
    assert_eq!(
        deregister_request(&args).unwrap().endpoint,
        Some(EndpointId {
            address: "::1".into(),
            port: 80
        })
    );
    args.address = None;
    assert!(deregister_request(&args).is_err());
    args.port = None;
    assert!(deregister_request(&args).is_err());
    args.whole_service = true;
    assert_eq!(deregister_request(&args).unwrap().endpoint, None);
}

/// Service views default the protocol, null out empty fields and sort endpoints by IP, not text.
#[test]
fn service_view_normalises_wire_values() {
    let view = ServiceView::from_proto(&sample_service());
    assert_eq!(view.ports[0].protocol, "tcp");
    assert_eq!(view.endpoints[0].address, "10.0.0.9");
    assert_eq!(view.endpoints[0].pod, None);
    assert_eq!(view.endpoints[1].zone, None);
    assert_eq!(view.policy.as_ref().unwrap().request_timeout_ms, None);
    assert_eq!(view.ready_count(), 1);
}

/// `get` shows the service row, its labels and policy, the read version and every endpoint.
#[test]
fn get_table_renders() {
    let detail = ServiceDetail {
        version: 40,
        service: ServiceView::from_proto(&sample_service()),
    };
    assert_eq!(
        detail.to_table(),
        "NAMESPACE  NAME  PORTS          READY/TOTAL  SOURCE  MODIFY-INDEX\n\
         shop       web   http:8080:tcp  1/2          api     12\n\
         \n\
         labels:     app=web\n\
         policy:     timeout=none max-retries=2 load-balancer=default\n\
         created at: 3\n\
         read at:    version 40\n\
         \n\
         ADDRESS    PORT  READY  ZONE   POD    MODIFY-INDEX\n\
         10.0.0.9   8080  true   eu-1a  -      11\n\
         10.0.0.10  8080  false  -      web-1  12\n"
    );
}

/// JSON for `list` is the read version and full service objects, endpoints included.
#[test]
fn list_json_has_full_objects() {
    let list = ServiceList {
        version: 40,
        services: vec![ServiceView::from_proto(&sample_service())],
    };
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json["version"], 40);
    assert_eq!(json["services"][0]["labels"]["app"], "web");
    assert_eq!(json["services"][0]["endpoints"][1]["pod"], "web-1");
    assert_eq!(json["services"][0]["policy"]["max_retries"], 2);
    assert_eq!(
        json["services"][0]["policy"]["load_balancer"],
        serde_json::Value::Null
    );
}

/// Write results name the endpoint (IPv6 bracketed) or the whole service, and the version.
#[test]
fn write_results_render() {
    let service = ServiceRef {
        namespace: "shop".into(),
        name: "web".into(),
    };
    let endpoint = EndpointRef {
        address: "fd00::1".into(),
        port: 80,
    };
    let answer = |version, leader_id, duplicate| WriteResponse {
        version,
        leader_id,
        duplicate,
    };
    let result = write_result(
        "registered",
        &service,
        Some(endpoint),
        &answer(42, 1, false),
    );
    assert_eq!(
        result.to_table(),
        "registered [fd00::1]:80 of shop/web at version 42 (leader 1)\n"
    );
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "namespace": "shop", "service": "web",
            "endpoint": {"address": "fd00::1", "port": 80},
            "version": 42, "leader_id": 1, "duplicate": false
        })
    );
    let result = write_result("deregistered", &service, None, &answer(43, 2, false));
    assert_eq!(
        result.to_table(),
        "deregistered service shop/web at version 43 (leader 2)\n"
    );
    let result = write_result("deregistered", &service, None, &answer(40, 2, true));
    assert_eq!(
        result.to_table(),
        "deregistered service shop/web at version 40 (leader 2; applied by an earlier try of \
         this write)\n"
    );
}
