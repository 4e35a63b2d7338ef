//! The proxy's metrics, through the `metrics` facade (Prometheus exposition by default).
//!
//! Labels are bounded: a direction, a catalog service name (or `passthrough` for destinations
//! outside the catalog, `local` for the pod's own application inbound), a status class, a
//! protocol, an error kind. Never an address or a path.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

/// Which way traffic flows through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the application out to other services.
    Outbound,
    /// From other pods in to the application.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// The `service` label of traffic to a destination outside the catalog.
pub const PASSTHROUGH: &str = "passthrough";
/// The `service` label of inbound traffic to the pod's own application.
pub const LOCAL: &str = "local";

/// Registers descriptions and units; called once at start.
pub fn describe() {
    describe_counter!(
        "netting_proxy_requests_total",
        "HTTP requests proxied, by direction, destination service and status class"
    );
    describe_histogram!(
        "netting_proxy_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its response headers, by direction and service"
    );
    describe_gauge!(
        "netting_proxy_connections_open",
        "Client connections open, by direction and detected protocol"
    );
    describe_counter!(
        "netting_proxy_connections_total",
        "Client connections accepted, by direction and detected protocol"
    );
    describe_counter!(
        "netting_proxy_bytes_total",
        Unit::Bytes,
        "Bytes carried, by direction and flow (to_upstream, to_client)"
    );
    describe_counter!(
        "netting_proxy_errors_total",
        "Connections or requests the proxy ended with an error, by direction and kind"
    );
    describe_counter!(
        "netting_proxy_retries_total",
        "Failed attempts retried (outcome retried) or not retried for want of retry budget \
         (outcome budget_exhausted), by direction"
    );
    describe_gauge!(
        "netting_proxy_config_version",
        "Catalog version of the config the proxy routes with"
    );
    describe_gauge!(
        "netting_proxy_control_plane_connected",
        "1 while a discovery stream to a control-plane replica is open"
    );
    describe_counter!(
        "netting_proxy_config_rejected_total",
        "Config updates the proxy refused (NACKed); it kept routing with the last good one"
    );
}

/// The class of an HTTP status (`2xx` ...), or `error` when no response came back.
pub fn status_class(status: Option<http::StatusCode>) -> &'static str {
    match status.map(|s| s.as_u16() / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        _ => "error",
    }
}

/// One HTTP request done: counted and timed. The counter and histogram handles of each
/// (direction, service, status class) are kept, so the hot path neither allocates label
/// strings nor looks the series up in the registry.
pub fn request_finished(
    direction: Direction,
    service: &str,
    status: Option<http::StatusCode>,
    latency: Duration,
) {
    let class = status_class(status);
    let (counter, histogram) = {
        let mut cache = REQUEST_SERIES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let per_direction = &mut cache[direction as usize];
        if !per_direction.contains_key(service) {
            per_direction.insert(service.to_owned(), ServiceSeries::new(direction, service));
        }
        match per_direction.get_mut(service) {
            Some(series) => (
                series.counter(direction, service, class),
                series.duration.clone(),
            ),
            None => return,
        }
    };
    counter.increment(1);
    histogram.record(latency.as_secs_f64());
}

/// Cached series of one service in one direction.
struct ServiceSeries {
    duration: Histogram,
    /// Requests by status class, created on first use.
    by_class: Vec<(&'static str, Counter)>,
}

impl ServiceSeries {
    fn new(direction: Direction, service: &str) -> ServiceSeries {
        ServiceSeries {
            duration: histogram!(
                "netting_proxy_request_duration_seconds",
                "direction" => direction.as_str(),
                "service" => service.to_owned()
            ),
            by_class: Vec::with_capacity(2),
        }
    }

    fn counter(&mut self, direction: Direction, service: &str, class: &'static str) -> Counter {
        if let Some((_, counter)) = self.by_class.iter().find(|(c, _)| *c == class) {
            return counter.clone();
        }
        let counter = counter!(
            "netting_proxy_requests_total",
            "direction" => direction.as_str(),
            "service" => service.to_owned(),
            "status_class" => class
        );
        self.by_class.push((class, counter.clone()));
        counter
    }
}

/// Bounded like the label itself: one entry per catalog service seen, per direction.
static REQUEST_SERIES: OnceLock<Mutex<[HashMap<String, ServiceSeries>; 2]>> = OnceLock::new();

/// Counts a connection and keeps it in the open-connections gauge until dropped.
pub fn connection_opened(direction: Direction, protocol: &'static str) -> ConnectionGuard {
    counter!(
        "netting_proxy_connections_total",
        "direction" => direction.as_str(),
        "protocol" => protocol
    )
    .increment(1);
    gauge!(
        "netting_proxy_connections_open",
        "direction" => direction.as_str(),
        "protocol" => protocol
    )
    .increment(1.0);
    ConnectionGuard {
        direction,
        protocol,
    }
}

/// Holds a connection in the open-connections gauge.
#[derive(Debug)]
pub struct ConnectionGuard {
    direction: Direction,
    protocol: &'static str,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        gauge!(
            "netting_proxy_connections_open",
            "direction" => self.direction.as_str(),
            "protocol" => self.protocol
        )
        .decrement(1.0);
    }
}

/// Bytes carried by one connection or request, both ways.
pub fn bytes(direction: Direction, to_upstream: u64, to_client: u64) {
    counter!(
        "netting_proxy_bytes_total",
        "direction" => direction.as_str(),
        "flow" => "to_upstream"
    )
    .increment(to_upstream);
    counter!(
        "netting_proxy_bytes_total",
        "direction" => direction.as_str(),
        "flow" => "to_client"
    )
    .increment(to_client);
}

/// A connection or request ended by the proxy with an error: `no_endpoint`, `connect`,
/// `timeout`, `malformed`, `upstream_reset`, `too_large`, ...
pub fn proxy_error(direction: Direction, kind: &'static str) {
    counter!(
        "netting_proxy_errors_total",
        "direction" => direction.as_str(),
        "kind" => kind
    )
    .increment(1);
}

/// A failed attempt that was retried (`retried`), or that the retry budget did not let be
/// retried (`budget_exhausted`).
pub fn retry(direction: Direction, outcome: &'static str) {
    counter!(
        "netting_proxy_retries_total",
        "direction" => direction.as_str(),
        "outcome" => outcome
    )
    .increment(1);
}

pub fn config_applied(version: u64) {
    gauge!("netting_proxy_config_version").set(version as f64);
}

pub fn control_plane_connected(connected: bool) {
    gauge!("netting_proxy_control_plane_connected").set(if connected { 1.0 } else { 0.0 });
}

pub fn config_rejected() {
    counter!("netting_proxy_config_rejected_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(http::StatusCode::OK)), "2xx");
        assert_eq!(status_class(Some(http::StatusCode::BAD_GATEWAY)), "5xx");
        assert_eq!(status_class(Some(http::StatusCode::NOT_FOUND)), "4xx");
        assert_eq!(status_class(None), "error");
    }
}
