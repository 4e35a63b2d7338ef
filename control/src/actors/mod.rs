//! The actix actors of a replica. Each actor's state is private; messages are the only way in.

pub mod catalog_file_watcher;
pub mod catalog_writer;

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
}
