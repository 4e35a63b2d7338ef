//! The client's settings: checked once, before the client starts, so that a bad replica address
//! or an empty subscription stops the proxy's start-up with the name of the field instead of
//! turning into a reconnect loop.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use thiserror::Error;
use tonic::transport::Endpoint;

use crate::types::ServiceName;

/// A setting the client cannot run with; `field` names it as [`ClientConfig`] spells it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidConfig {
    pub field: String,
    pub reason: String,
}

impl InvalidConfig {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Who the proxy is, as sent in the hello. Build with [`Identity::new`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Pod name; required.
    pub pod: String,
    /// Pod namespace; required, a DNS-1123 label.
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The proxy's own version, shown to operators.
    pub proxy_version: String,
}

impl Identity {
    pub fn new(pod: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            pod: pod.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }

    pub fn service_account(mut self, service_account: impl Into<String>) -> Self {
        self.service_account = service_account.into();
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn proxy_version(mut self, version: impl Into<String>) -> Self {
        self.proxy_version = version.into();
        self
    }
}

/// The services the proxy wants: every service of the listed namespaces plus the named ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub namespaces: Vec<String>,
    pub services: Vec<ServiceName>,
}

impl Subscription {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every service of `namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }

    /// Adds one service.
    pub fn service(mut self, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        self.services.push(ServiceName::new(namespace, name));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.services.is_empty()
    }
}

/// How the client finds and follows the control plane. [`ClientConfig::new`] fills in the
/// defaults; [`ClientConfig::validate`] (also run by `DiscoveryClient::spawn`) checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Control-plane replicas, as `host:port` or `http://host:port`; any of them will do.
    pub replicas: Vec<String>,
    pub identity: Identity,
    pub subscription: Subscription,
    /// Ceiling of the first reconnect delay; doubles after each stream that applied nothing.
    pub backoff_min: Duration,
    /// Largest ceiling of the reconnect delay.
    pub backoff_max: Duration,
    /// Ceiling of the jittered pause before moving on when a replica asks the client to try
    /// another one (it lags behind the client's version).
    pub try_another_delay: Duration,
    /// Time allowed to open a connection to a replica.
    pub connect_timeout: Duration,
    /// Time allowed from the hello to the first response. A replica that lags waits for its
    /// own state to catch up before answering, so this is longer than a round trip.
    pub response_timeout: Duration,
    /// Interval of HTTP/2 pings on an open stream: a quiet catalog sends nothing for a long
    /// time, and a replica that vanished without closing the connection is found only this way.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is declared dead.
    pub keepalive_timeout: Duration,
    /// Largest response accepted; a snapshot of a big namespace can exceed tonic's 4 MiB.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
    pub const DEFAULT_TRY_ANOTHER_DELAY: Duration = Duration::from_millis(50);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

    /// A config with the default timings.
    pub fn new<I, S>(replicas: I, identity: Identity, subscription: Subscription) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            replicas: replicas.into_iter().map(Into::into).collect(),
            identity,
            subscription,
            backoff_min: Self::DEFAULT_BACKOFF_MIN,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            try_another_delay: Self::DEFAULT_TRY_ANOTHER_DELAY,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Self::DEFAULT_RESPONSE_TIMEOUT,
            keepalive_interval: Self::DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: Self::DEFAULT_KEEPALIVE_TIMEOUT,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.resolve().map(drop)
    }

    /// Validates and turns the addresses into dialable endpoints.
    pub(crate) fn resolve(&self) -> Result<Vec<Replica>, InvalidConfig> {
        self.check_identity()?;
        self.check_subscription()?;
        self.check_timings()?;
        if self.replicas.is_empty() {
            return Err(InvalidConfig::new(
                "replicas",
                "at least one replica address is required",
            ));
        }
        let mut seen = HashSet::new();
        let mut replicas = Vec::with_capacity(self.replicas.len());
        for (index, raw) in self.replicas.iter().enumerate() {
            let replica = self.replica(index, raw)?;
            // The same replica twice would get twice the share of reconnects, and is almost
            // certainly a typo for another replica.
            if !seen.insert(replica.authority.clone()) {
                return Err(InvalidConfig::new(
                    format!("replicas[{index}]"),
                    format!("{} is listed more than once", replica.authority),
                ));
            }
            replicas.push(replica);
        }
        Ok(replicas)
    }

    fn check_identity(&self) -> Result<(), InvalidConfig> {
        let pod = &self.identity.pod;
        if pod.trim().is_empty() {
            return Err(InvalidConfig::new("identity.pod", "must not be empty"));
        }
        if pod.chars().any(char::is_control) {
            return Err(InvalidConfig::new(
                "identity.pod",
                "contains control characters",
            ));
        }
        dns_label("identity.namespace", &self.identity.namespace)
    }

    fn check_subscription(&self) -> Result<(), InvalidConfig> {
        if self.subscription.is_empty() {
            return Err(InvalidConfig::new(
                "subscription",
                "must name at least one namespace or service",
            ));
        }
        for (i, namespace) in self.subscription.namespaces.iter().enumerate() {
            dns_label(&format!("subscription.namespaces[{i}]"), namespace)?;
        }
        for (i, service) in self.subscription.services.iter().enumerate() {
            dns_label(
                &format!("subscription.services[{i}].namespace"),
                &service.namespace,
            )?;
            dns_label(&format!("subscription.services[{i}].name"), &service.name)?;
        }
        Ok(())
    }

    fn check_timings(&self) -> Result<(), InvalidConfig> {
        let positive = [
            ("backoff_min", self.backoff_min),
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(InvalidConfig::new(field, "must be greater than zero"));
            }
        }
        if self.backoff_max < self.backoff_min {
            return Err(InvalidConfig::new(
                "backoff_max",
                format!(
                    "{:?} is shorter than backoff_min ({:?})",
                    self.backoff_max, self.backoff_min
                ),
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(InvalidConfig::new(
                "max_response_bytes",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// Parses `host:port` or `http://host:port` into an endpoint with this config's timings.
    fn replica(&self, index: usize, raw: &str) -> Result<Replica, InvalidConfig> {
        let field = format!("replicas[{index}]");
        let invalid = |reason: String| InvalidConfig::new(field.clone(), reason);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty address".into()));
        }
        let uri = match trimmed.split_once("://") {
            None => format!("http://{trimmed}"),
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => trimmed.to_owned(),
            Some((scheme, _)) => {
                // The discovery port speaks plaintext HTTP/2 and this crate has no TLS stack;
                // refusing here is clearer than a handshake error on every attempt.
                return Err(invalid(format!(
                    "{raw:?}: scheme {scheme:?} is not supported; use host:port or http://host:port"
                )));
            }
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid(format!("{raw:?} is not an address: {e}")))?;
        let parsed = endpoint.uri();
        let Some(authority) = parsed.authority() else {
            return Err(invalid(format!("{raw:?} has no host")));
        };
        if authority.as_str().contains('@') {
            return Err(invalid(format!("{raw:?}: user information is not allowed")));
        }
        if authority.host().is_empty() {
            return Err(invalid(format!("{raw:?} has no host")));
        }
        match authority.port_u16() {
            None => return Err(invalid(format!("{raw:?} has no port"))),
            Some(0) => return Err(invalid(format!("{raw:?}: port 0 is not allowed"))),
            Some(_) => {}
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid(format!(
                "{raw:?}: must be host:port, without a path or query"
            )));
        }
        let authority = authority.as_str().to_ascii_lowercase();
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout)
            // The stream is idle between catalog changes; pings must flow regardless.
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        Ok(Replica {
            authority,
            endpoint,
        })
    }
}

/// A replica address, checked and ready to dial.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    /// `host:port`, what logs and the status show.
    pub(crate) authority: String,
    pub(crate) endpoint: Endpoint,
}

/// A DNS-1123 label: 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
fn dns_label(field: &str, value: &str) -> Result<(), InvalidConfig> {
    if value.is_empty() {
        return Err(InvalidConfig::new(field, "must not be empty"));
    }
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(InvalidConfig::new(
            field,
            format!(
                "{value:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn config(replicas: &[&str]) -> ClientConfig {
        ClientConfig::new(
            replicas.iter().copied(),
            Identity::new("web-0", "shop"),
            Subscription::new().namespace("shop"),
        )
    }

    fn field_of(config: &ClientConfig) -> String {
        config
            .validate()
            .expect_err("config should be refused")
            .field
    }

    /// Both accepted address forms normalise to the same `host:port`.
    #[test]
    fn addresses_with_and_without_scheme() {
        let replicas = config(&["10.0.0.1:7100", "http://Control-1.netting:7100/"])
            .resolve()
            .unwrap();
        assert_eq!(replicas[0].authority, "10.0.0.1:7100");
        assert_eq!(replicas[1].authority, "control-1.netting:7100");
        assert_eq!(
            config(&["[::1]:7100"]).resolve().unwrap()[0].authority,
            "[::1]:7100"
        );
    }

    /// Every kind of bad address is refused and the error names its position in the list.
    #[test]
    fn bad_addresses_name_the_entry() {
        for bad in [
            "",
            "10.0.0.1",
            "https://10.0.0.1:7100",
            "grpc://10.0.0.1:7100",
            "10.0.0.1:7100/path",
            "10.0.0.1:0",
            "10.0.0.1:99999",
            "user@10.0.0.1:7100",
            "not an address:7100",
        ] {
            let config = config(&["10.0.0.2:7100", bad]);
            assert_eq!(
                field_of(&config),
                "replicas[1]",
                "{bad:?} should be refused"
            );
        }
        let duplicate = config(&["10.0.0.2:7100", "http://10.0.0.2:7100"]);
        assert_eq!(field_of(&duplicate), "replicas[1]");
    }

    /// Missing or malformed required fields are refused with their names.
    #[test]
    fn required_fields_are_named() {
        assert_eq!(field_of(&config(&[])), "replicas");

        let mut no_pod = config(&["10.0.0.1:7100"]);
        no_pod.identity.pod = String::new();
        assert_eq!(field_of(&no_pod), "identity.pod");

        let mut no_namespace = config(&["10.0.0.1:7100"]);
        no_namespace.identity.namespace = String::new();
        assert_eq!(field_of(&no_namespace), "identity.namespace");

        let mut empty = config(&["10.0.0.1:7100"]);
        empty.subscription = Subscription::new();
        assert_eq!(field_of(&empty), "subscription");

        let mut bad_service = config(&["10.0.0.1:7100"]);
        bad_service.subscription = Subscription::new().service("shop", "Web");
        assert_eq!(field_of(&bad_service), "subscription.services[0].name");

        let mut backwards = config(&["10.0.0.1:7100"]);
        backwards.backoff_max = Duration::from_millis(10);
        assert_eq!(field_of(&backwards), "backoff_max");

        let mut zero = config(&["10.0.0.1:7100"]);
        zero.connect_timeout = Duration::ZERO;
        assert_eq!(field_of(&zero), "connect_timeout");
    }
}
