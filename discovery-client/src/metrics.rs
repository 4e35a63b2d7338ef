//! The client's metrics, through the `metrics` facade: whatever recorder the proxy installs
//! exports them, and without one they cost nothing. Labels are bounded (a fixed result set).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

const UPDATES: &str = "netting_discovery_client_updates_total";
const RECONNECTS: &str = "netting_discovery_client_reconnects_total";
const CONNECTED: &str = "netting_discovery_client_connected";
const VERSION: &str = "netting_discovery_client_config_version";

/// Registers help texts with the installed recorder; call once after installing it.
pub fn describe_metrics() {
    describe_counter!(
        UPDATES,
        Unit::Count,
        "Discovery responses handled, by result (ack or nack)"
    );
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "Connection attempts to the control plane after the first"
    );
    describe_gauge!(
        CONNECTED,
        "1 while a discovery stream to a control-plane replica is open"
    );
    describe_gauge!(VERSION, "Version of the configuration in use");
}

pub(crate) fn update(result: &'static str) {
    counter!(UPDATES, "result" => result).increment(1);
}

pub(crate) fn reconnected() {
    counter!(RECONNECTS).increment(1);
}

pub(crate) fn connected(open: bool) {
    gauge!(CONNECTED).set(if open { 1.0 } else { 0.0 });
}

pub(crate) fn version(version: u64) {
    // f64 is exact up to 2^53, far beyond any Raft index a cluster reaches.
    #[allow(clippy::cast_precision_loss)]
    gauge!(VERSION).set(version as f64);
}
