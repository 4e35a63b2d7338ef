#![allow(clippy::unwrap_used, clippy::expect_used)]

use netting_proto::discovery::v1::{Endpoint, Policy, Port, SessionInfo};

use super::*;
use crate::ctl::args::parse_pod_ref;
use crate::ctl::target::Target;

fn replica(node_id: Option<u64>) -> KnownReplica {
    KnownReplica {
        node_id,
        address: "10.0.0.2:7100".to_owned(),
        target: Ok(Target::parse("10.0.0.2:7100").unwrap()),
    }
}

fn endpoint(address: &str, ready: bool) -> Endpoint {
    Endpoint {
        address: address.to_owned(),
        port: 8080,
        ready,
        zone: String::new(),
    }
}

fn answer(acked: u64, sent: Option<u64>, version: u64) -> SidecarConfigResponse {
    SidecarConfigResponse {
        session: Some(SessionInfo {
            pod: "web-0".into(),
            namespace: "default".into(),
            proxy_version: "1.2.0".into(),
            acked_version: acked,
            sent_version: sent,
            connected_for_ms: 42_000,
            nacks: 1,
        }),
        version,
        services: vec![
            ServiceConfig {
                namespace: "shop".into(),
                name: "web".into(),
                ports: vec![Port {
                    name: "http".into(),
                    port: 8080,
                    protocol: "http".into(),
                }],
                endpoints: vec![
                    endpoint("10.0.0.10", true),
                    endpoint("10.0.0.9", false),
                    Endpoint {
                        zone: "eu-1a".into(),
                        ..endpoint("10.0.0.9", true)
                    },
                ],
                policy: Some(Policy {
                    request_timeout_ms: 500,
                    max_retries: 2,
                    load_balancer: String::new(),
                }),
            },
            ServiceConfig {
                namespace: "default".into(),
                name: "db".into(),
                ..ServiceConfig::default()
            },
        ],
    }
}

fn view(acked: u64, sent: Option<u64>, version: u64) -> SidecarConfigView {
    let pod = parse_pod_ref("default/web-0").unwrap();
    SidecarConfigView::new(&pod, &replica(Some(2)), answer(acked, sent, version)).unwrap()
}

/// Services are sorted by namespace and name, endpoints numerically, and unset proto fields become null.
#[test]
fn view_sorts_services_and_endpoints() {
    let view = view(12, None, 12);
    let names: Vec<String> = view
        .services
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    assert_eq!(names, ["default/db", "shop/web"]);
    let web = &view.services[1];
    let endpoints: Vec<(&str, bool)> = web
        .endpoints
        .iter()
        .map(|e| (e.address.as_str(), e.ready))
        .collect();
    assert_eq!(
        endpoints,
        [("10.0.0.9", false), ("10.0.0.9", true), ("10.0.0.10", true)]
    );
    assert_eq!(web.ready_count(), 2);
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["sidecar"], "default/web-0");
    assert_eq!(json["node_id"], 2);
    assert_eq!(json["catalog_version"], 12);
    assert_eq!(json["session"]["acked_version"], 12);
    assert_eq!(json["services"][0]["policy"], serde_json::Value::Null);
    assert_eq!(
        json["services"][1]["endpoints"][0]["zone"],
        serde_json::Value::Null
    );
    assert_eq!(json["services"][1]["endpoints"][1]["zone"], "eu-1a");
    assert_eq!(
        json["services"][1]["policy"]["load_balancer"],
        serde_json::Value::Null
    );
}

/// The table names the replica, the session's versions against the catalog, and one row per service.
#[test]
fn table_shows_replica_versions_and_services() {
    assert_eq!(
        view(12, None, 12).to_table(),
        "sidecar default/web-0 is connected to replica 2 (10.0.0.2:7100)\n\
         proxy version:  1.2.0\n\
         acknowledged:   12\n\
         in flight:      -\n\
         catalog:        version 12 (acknowledged)\n\
         connected for:  42s\n\
         NACKs:          1\n\
         \n\
         NAMESPACE  NAME  PORTS           READY/TOTAL  POLICY\n\
         default    db    -               0/0          -\n\
         shop       web   http:8080:http  2/3          timeout=500ms max-retries=2 load-balancer=default\n"
    );
}

/// A sidecar behind the catalog is shown as waiting for its ACK or for the update to be sent.
#[test]
fn progress_tells_sent_from_not_yet_sent() {
    assert_eq!(
        view(10, Some(12), 12).progress(),
        "sent, not yet acknowledged"
    );
    assert_eq!(
        view(10, Some(11), 12).progress(),
        "not yet sent: an update is on its way"
    );
    assert_eq!(
        view(10, None, 12).progress(),
        "not yet sent: an update is on its way"
    );
}

/// Without a known node id the replica is named by address; no services says so.
#[test]
fn table_without_node_id_or_services() {
    let pod = parse_pod_ref("default/web-0").unwrap();
    let mut bare = answer(3, None, 3);
    bare.services.clear();
    let view = SidecarConfigView::new(&pod, &replica(None), bare).unwrap();
    let text = view.to_table();
    assert!(
        text.starts_with("sidecar default/web-0 is connected to replica 10.0.0.2:7100\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\nno services in its subscription\n"),
        "{text}"
    );
}

/// An answer without the session is refused rather than shown half-empty.
#[test]
fn answer_without_session_is_unexpected() {
    let pod = parse_pod_ref("default/web-0").unwrap();
    let mut broken = answer(1, None, 1);
    broken.session = None;
    let err = SidecarConfigView::new(&pod, &replica(None), broken).unwrap_err();
    assert!(matches!(err, CtlError::Unexpected(_)), "{err:?}");
}
