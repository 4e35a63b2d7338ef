//! The actix actors of a replica. Each actor's state is private; messages are the only way in.

pub mod catalog_file_watcher;
pub mod catalog_writer;
pub mod config_pusher;
pub mod leadership;
pub mod session_messages;
pub mod sidecar_session;

/// HELP text and units of the actors' metrics.
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_histogram!(
        "netting_catalog_write_batch_size",
        Unit::Count,
        "Catalog commands carried by one Raft entry written by the catalog writer"
    );
    describe_histogram!(
        "netting_catalog_write_seconds",
        Unit::Seconds,
        "Time for one batch of catalog commands to be committed and applied"
    );
    describe_histogram!(
        "netting_catalog_propose_seconds",
        Unit::Seconds,
        "Time from a catalog command reaching the writer to its answer, queueing included"
    );
    describe_counter!(
        "netting_catalog_file_errors_total",
        "Catalog file reads that failed to read or parse; the catalog kept its last good content"
    );
    describe_counter!(
        "netting_catalog_file_reloads_total",
        "Catalog file reconciliations that proposed changes"
    );
    metrics::describe_gauge!(
        "netting_catalog_file_conflicts",
        Unit::Count,
        "Services the catalog file lists that another source owns, left to their owner"
    );
    describe_counter!(
        "netting_catalog_writes_refused_total",
        "Catalog writes refused, by reason: by the state machine, or queue_full when the leader's write queue was full (not applied)"
    );
    metrics::describe_gauge!(
        "netting_sessions_connected",
        Unit::Count,
        "Sidecar discovery streams connected to this replica"
    );
    describe_counter!(
        "netting_config_pushes_total",
        "Pushes of catalog changes to sessions, by reason"
    );
    describe_histogram!(
        "netting_config_push_sessions",
        Unit::Count,
        "Sessions notified by one push"
    );
    describe_counter!(
        "netting_config_updates_total",
        "Updates sent to sidecars, by kind (snapshot or delta) and reason"
    );
    describe_counter!(
        "netting_config_nacks_total",
        "Updates sidecars refused (they keep their last good configuration)"
    );
    describe_counter!(
        "netting_config_pending_replaced_total",
        "Pending updates of a session replaced by a newer one before it was sent"
    );
    describe_counter!(
        "netting_sessions_closed_total",
        "Sidecar sessions closed, by reason"
    );
    describe_histogram!(
        "netting_config_commit_to_ack_seconds",
        Unit::Seconds,
        "Time from a catalog version being applied on this replica to a sidecar acknowledging it"
    );
}
