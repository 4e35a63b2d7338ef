//! The first message of a discovery stream, validated into domain types. Every invalid field
//! becomes an [`InvalidField`] naming it as the protocol calls it.

use std::collections::BTreeSet;

use netting_proto::discovery::v1 as pb;
use netting_raft::catalog::validate::{self, InvalidField};
use netting_raft::catalog::{LogIndex, ServiceKey};

/// Most namespaces plus named services one subscription may list.
pub const MAX_SUBSCRIPTION_ENTRIES: usize = 256;

/// Who a sidecar is, as far as operators need to tell sessions apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarIdentity {
    pub pod: String,
    pub namespace: String,
    pub proxy_version: String,
}

/// The services a sidecar wants: whole namespaces, and services by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub namespaces: BTreeSet<String>,
    pub services: BTreeSet<ServiceKey>,
}

impl Subscription {
    pub fn includes(&self, key: &ServiceKey) -> bool {
        self.namespaces.contains(&key.namespace) || self.services.contains(key)
    }
}

/// Where the sidecar says it is: the last version it applied and the cluster that version
/// belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub version: LogIndex,
    pub cluster_id: String,
}

/// A validated hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub identity: SidecarIdentity,
    pub subscription: Subscription,
    /// `None` when the sidecar has no configuration yet.
    pub resume: Option<ResumePoint>,
}

impl TryFrom<&pb::Hello> for Hello {
    type Error = InvalidField;

    fn try_from(hello: &pb::Hello) -> Result<Self, InvalidField> {
        let identity = hello
            .identity
            .as_ref()
            .ok_or_else(|| InvalidField::new("identity", "is required"))?;
        if identity.pod.is_empty() {
            return Err(InvalidField::new("identity.pod", "is required"));
        }
        validate::free_text("identity.pod", &identity.pod)?;
        validate::dns_label("identity.namespace", &identity.namespace)?;
        validate::free_text("identity.proxy_version", &identity.proxy_version)?;
        let subscription = subscription(hello.subscription.as_ref())?;
        let resume = match (hello.last_version, hello.cluster_id.as_str()) {
            (0, _) => None,
            (_, "") => {
                return Err(InvalidField::new(
                    "cluster_id",
                    "is required when last_version is set",
                ));
            }
            (version, cluster_id) => {
                validate::free_text("cluster_id", cluster_id)?;
                Some(ResumePoint {
                    version,
                    cluster_id: cluster_id.to_owned(),
                })
            }
        };
        Ok(Hello {
            identity: SidecarIdentity {
                pod: identity.pod.clone(),
                namespace: identity.namespace.clone(),
                proxy_version: identity.proxy_version.clone(),
            },
            subscription,
            resume,
        })
    }
}

fn subscription(sub: Option<&pb::Subscription>) -> Result<Subscription, InvalidField> {
    let sub = sub.ok_or_else(|| InvalidField::new("subscription", "is required"))?;
    if sub.namespaces.is_empty() && sub.services.is_empty() {
        return Err(InvalidField::new(
            "subscription",
            "names no namespace and no service",
        ));
    }
    if sub.namespaces.len() + sub.services.len() > MAX_SUBSCRIPTION_ENTRIES {
        return Err(InvalidField::new(
            "subscription",
            format!("lists more than {MAX_SUBSCRIPTION_ENTRIES} namespaces and services"),
        ));
    }
    let mut out = Subscription::default();
    for (i, ns) in sub.namespaces.iter().enumerate() {
        validate::dns_label(&format!("subscription.namespaces[{i}]"), ns)?;
        out.namespaces.insert(ns.clone());
    }
    for (i, service) in sub.services.iter().enumerate() {
        validate::dns_label(
            &format!("subscription.services[{i}].namespace"),
            &service.namespace,
        )?;
        validate::dns_label(&format!("subscription.services[{i}].name"), &service.name)?;
        out.services.insert(ServiceKey {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn hello() -> pb::Hello {
        pb::Hello {
            identity: Some(pb::ProxyIdentity {
                pod: "web-0".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            subscription: Some(pb::Subscription {
                namespaces: vec!["default".into()],
                services: vec![pb::ServiceRef {
                    namespace: "prod".into(),
                    name: "db".into(),
                }],
            }),
            last_version: 0,
            cluster_id: String::new(),
        }
    }

    fn field(h: &pb::Hello) -> String {
        Hello::try_from(h).expect_err("must be refused").field
    }

    /// A valid hello gives the subscription; version 0 means no resume point.
    #[test]
    fn valid_hello() {
        let parsed = Hello::try_from(&hello()).unwrap();
        assert!(
            parsed
                .subscription
                .includes(&ServiceKey::new("default", "x").unwrap())
        );
        assert!(
            parsed
                .subscription
                .includes(&ServiceKey::new("prod", "db").unwrap())
        );
        assert!(
            !parsed
                .subscription
                .includes(&ServiceKey::new("prod", "web").unwrap())
        );
        assert_eq!(parsed.resume, None);
    }

    /// Each malformed part is refused naming its field.
    #[test]
    fn malformed_hello_names_the_field() {
        let mut h = hello();
        h.identity = None;
        assert_eq!(field(&h), "identity");
        let mut h = hello();
        h.identity.as_mut().unwrap().pod.clear();
        assert_eq!(field(&h), "identity.pod");
        let mut h = hello();
        h.identity.as_mut().unwrap().namespace = "Bad_NS".into();
        assert_eq!(field(&h), "identity.namespace");
        let mut h = hello();
        h.subscription = Some(pb::Subscription::default());
        assert_eq!(field(&h), "subscription");
        let mut h = hello();
        h.subscription
            .as_mut()
            .unwrap()
            .namespaces
            .push("no way".into());
        assert_eq!(field(&h), "subscription.namespaces[1]");
        let mut h = hello();
        h.last_version = 7;
        assert_eq!(field(&h), "cluster_id");
    }
}
