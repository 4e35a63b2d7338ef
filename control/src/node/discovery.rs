//! Config distribution on this replica: the config pusher, and the discovery service with its
//! session actors spread over one arbiter (thread) per core.

use actix::{Actor, Recipient};
use netting_raft::CatalogHandle;

use crate::actors::config_pusher::{ConfigPusher, PushSettings};
use crate::actors::session_messages::ListSessions;
use crate::actors::sidecar_session::SessionLimits;
use crate::config::ReplicaConfig;
use crate::discovery::applied_times::AppliedTimes;
use crate::grpc::Replica;
use crate::grpc::discovery::{DiscoveryLimits, DiscoveryService};

/// The discovery service, and where the admin server lists the sessions.
pub(super) fn start(
    config: &ReplicaConfig,
    replica: Replica,
    catalog: &CatalogHandle,
) -> (DiscoveryService, Recipient<ListSessions>) {
    let settings = &config.sidecars;
    let applied_times = AppliedTimes::default();
    let pusher = ConfigPusher::new(
        catalog.clone(),
        PushSettings {
            quiet: settings.push_quiet,
            max_delay: settings.push_max_delay,
            max_in_flight: settings.push_max_in_flight,
            version_only_delay: settings.push_version_only_delay,
        },
        applied_times.clone(),
    )
    .start();
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let arbiters = (0..threads)
        .map(|_| actix::Arbiter::new().handle())
        .collect();
    let limits = DiscoveryLimits {
        hello_timeout: settings.hello_timeout,
        catch_up_wait: settings.catch_up_wait,
        session: SessionLimits {
            ack_timeout: settings.ack_timeout,
            max_age: settings.max_age,
        },
    };
    let sessions = pusher.clone().recipient();
    let service = DiscoveryService::new(replica, pusher, arbiters, limits, applied_times);
    (service, sessions)
}
