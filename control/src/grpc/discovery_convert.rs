//! The wire form of config distribution: the only place that builds discovery prost types
//! (responses, the admin views of sessions) and the statuses that end a stream, from the
//! domain values of `discovery::view` and `discovery::session`.

use netting_proto::discovery::v1 as pb;
use netting_raft::catalog::ServiceKey;
use tonic::Status;

use crate::actors::session_messages::SessionInfo;
use crate::discovery::session::{Close, Response};
use crate::discovery::view::{ServiceView, Update};

/// Trailer telling a sidecar to reconnect to another replica rather than retry this one.
pub const TRY_ANOTHER_REPLICA: &str = "netting-try-another-replica";

/// UNAVAILABLE with the trailer that sends the sidecar to another replica.
pub fn try_another(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(
        TRY_ANOTHER_REPLICA,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    status
}

pub fn service_config(view: &ServiceView) -> pb::ServiceConfig {
    pb::ServiceConfig {
        namespace: view.key.namespace.clone(),
        name: view.key.name.clone(),
        ports: view
            .ports
            .iter()
            .map(|p| pb::Port {
                name: p.name.clone(),
                port: u32::from(p.port),
                protocol: p.protocol.as_str().to_owned(),
            })
            .collect(),
        endpoints: view
            .endpoints
            .iter()
            .map(|e| pb::Endpoint {
                address: e.address.to_string(),
                port: u32::from(e.port),
                ready: e.ready,
                zone: e.zone.clone().unwrap_or_default(),
            })
            .collect(),
        policy: Some(pb::Policy {
            request_timeout_ms: view.policy.request_timeout_ms.unwrap_or(0),
            max_retries: view.policy.max_retries,
            load_balancer: view
                .policy
                .load_balancer
                .map(|lb| lb.as_str().to_owned())
                .unwrap_or_default(),
        }),
    }
}

pub fn service_ref(key: &ServiceKey) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

pub fn services(views: &[ServiceView]) -> Vec<pb::ServiceConfig> {
    views.iter().map(service_config).collect()
}

fn update(update: &Update) -> pb::discovery_response::Update {
    match update {
        Update::Snapshot(views) => pb::discovery_response::Update::Snapshot(pb::Snapshot {
            services: services(views),
        }),
        Update::Delta {
            from_version,
            upserted,
            removed,
        } => pb::discovery_response::Update::Delta(pb::Delta {
            from_version: *from_version,
            upserted: services(upserted),
            removed: removed.iter().map(service_ref).collect(),
        }),
    }
}

pub fn response(response: &Response, cluster_id: &str) -> pb::DiscoveryResponse {
    pb::DiscoveryResponse {
        nonce: response.nonce.to_string(),
        version: response.version,
        cluster_id: cluster_id.to_owned(),
        update: Some(update(&response.update)),
    }
}

/// The status a stream ends with (see `discovery.proto`, *Ending*).
pub fn close_status(close: &Close) -> Status {
    match close {
        Close::AckTimeout => {
            Status::deadline_exceeded("the sidecar did not acknowledge the last update in time")
        }
        Close::ProtocolError(why) => Status::invalid_argument(why.clone()),
        Close::MaxAge => Status::unavailable("the stream reached its maximum age; reconnect"),
        Close::Shutdown => Status::unavailable("the replica is shutting down"),
        // Never sent (nobody is listening), named for completeness.
        Close::StreamGone | Close::ClientGone => Status::cancelled("the stream is gone"),
    }
}

pub fn session_info(info: &SessionInfo) -> pb::SessionInfo {
    pb::SessionInfo {
        pod: info.pod.clone(),
        namespace: info.namespace.clone(),
        proxy_version: info.proxy_version.clone(),
        acked_version: info.acked_version.unwrap_or(0),
        sent_version: info.sent_version,
        connected_for_ms: u64::try_from(info.connected_for.as_millis()).unwrap_or(u64::MAX),
        nacks: info.nacks,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use netting_raft::catalog::{LoadBalancer, Protocol};
    use tokio::time::Instant;

    use super::*;
    use crate::discovery::session::PushReason;
    use crate::discovery::view::{EndpointView, PolicyView, PortView};

    /// Every field of the domain view reaches the wire, and absent optional fields become the
    /// proto defaults the `.proto` documents.
    #[test]
    fn a_response_carries_every_field() {
        let view = ServiceView {
            key: ServiceKey::new("default", "web").unwrap(),
            ports: vec![PortView {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Http,
            }],
            endpoints: vec![
                EndpointView {
                    address: "10.0.0.1".parse().unwrap(),
                    port: 8080,
                    ready: true,
                    zone: Some("a".into()),
                },
                EndpointView {
                    address: "fd00::1".parse().unwrap(),
                    port: 8080,
                    ready: false,
                    zone: None,
                },
            ],
            policy: PolicyView {
                request_timeout_ms: Some(1500),
                max_retries: 2,
                load_balancer: Some(LoadBalancer::RoundRobin),
            },
        };
        let wire = response(
            &Response {
                nonce: 7,
                version: 42,
                update: Update::Delta {
                    from_version: 40,
                    upserted: vec![view],
                    removed: vec![ServiceKey::new("default", "old").unwrap()],
                },
                reason: PushReason::CatalogChange,
                ack_deadline: Instant::now(),
            },
            "cluster-1",
        );
        assert_eq!((wire.nonce.as_str(), wire.version), ("7", 42));
        assert_eq!(wire.cluster_id, "cluster-1");
        let Some(pb::discovery_response::Update::Delta(delta)) = wire.update else {
            panic!("a delta: {:?}", wire.update);
        };
        assert_eq!(delta.from_version, 40);
        assert_eq!(delta.removed[0].name, "old");
        let web = &delta.upserted[0];
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web")
        );
        assert_eq!(web.ports[0].protocol, "http");
        assert_eq!(web.endpoints[0].zone, "a");
        assert_eq!(web.endpoints[1].address, "fd00::1");
        assert!(!web.endpoints[1].ready && web.endpoints[1].zone.is_empty());
        let policy = web.policy.as_ref().unwrap();
        assert_eq!(
            (
                policy.request_timeout_ms,
                policy.max_retries,
                policy.load_balancer.as_str()
            ),
            (1500, 2, "round_robin")
        );
    }

    /// Each reason a stream ends with reaches the sidecar as the status `discovery.proto`
    /// documents.
    #[test]
    fn closing_statuses_are_the_documented_ones() {
        use tonic::Code;
        for (close, code) in [
            (Close::AckTimeout, Code::DeadlineExceeded),
            (
                Close::ProtocolError("bad nonce".into()),
                Code::InvalidArgument,
            ),
            (Close::MaxAge, Code::Unavailable),
            (Close::Shutdown, Code::Unavailable),
        ] {
            let status = close_status(&close);
            assert_eq!(status.code(), code, "{close:?}");
            assert!(
                status.metadata().get(TRY_ANOTHER_REPLICA).is_none(),
                "{close:?}: only a replica that cannot serve the sidecar sends it elsewhere"
            );
        }
        assert_eq!(
            close_status(&Close::ProtocolError("bad nonce".into())).message(),
            "bad nonce"
        );
    }
}
