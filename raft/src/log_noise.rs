//! openraft's own log lines that Netting replaces with better ones, for the log set-up to drop.
//!
//! openraft 0.9 logs every failed RPC to a peer itself, at WARN and ERROR: while one peer is
//! down that is five lines every 50–500 ms from replication ("error replication to target",
//! "RPCError", "backoff mode", "update progress error", "heartbeat error"), one ERROR per election ("while requesting vote", "timeout") and
//! one per linearizable read ("timeout while confirming leadership"). A peer being down is
//! expected and needs nobody at 2 a.m.; [`crate::network::peer_health`] says it once, at WARN,
//! and again when the peer is back.
//!
//! Dropped: WARN and ERROR events of `openraft::replication` (its storage errors are also
//! reported, and are fatal, in `openraft::core::raft_core`, which is kept), WARN events of
//! `openraft::engine::handler::replication_handler` (its one ERROR precedes a panic), and WARN and ERROR
//! events of `openraft::core::raft_core` that name a peer (`target`) and an `error` — exactly
//! the three per-peer RPC failures above in openraft 0.9.25. openraft's DEBUG and TRACE lines
//! are never dropped: `NETTING_LOG=openraft=debug` still shows every attempt.

use tracing::{Level, Metadata};

/// Whether `meta` is one of openraft's per-attempt peer failure events (see the module doc).
pub fn is_replaced_openraft_event(meta: &Metadata<'_>) -> bool {
    if !meta.is_event() || *meta.level() > Level::WARN {
        return false;
    }
    match meta.target() {
        "openraft::replication" => true,
        "openraft::engine::handler::replication_handler" => *meta.level() == Level::WARN,
        "openraft::core::raft_core" => {
            let fields = meta.fields();
            fields.field("target").is_some() && fields.field("error").is_some()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use tracing::Subscriber;
    use tracing::subscriber::Interest;

    use super::*;

    /// Records the verdict for every event it sees.
    #[derive(Default, Clone)]
    struct Verdicts(Arc<Mutex<Vec<(String, bool)>>>);

    impl Subscriber for Verdicts {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            Interest::sometimes()
        }
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let meta = event.metadata();
            let name = format!("{} {}", meta.target(), meta.level());
            let dropped = is_replaced_openraft_event(meta);
            self.0.lock().unwrap().push((name, dropped));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// The per-peer failures are dropped; openraft's fatal errors, its DEBUG lines and
    /// everything of other crates are kept. The events mirror openraft 0.9.25's call sites.
    #[test]
    fn only_per_peer_failures_are_dropped() {
        let verdicts = Verdicts::default();
        tracing::subscriber::with_default(verdicts.clone(), || {
            // Dropped.
            tracing::event!(target: "openraft::replication", Level::ERROR, err = "x", "RPCError");
            tracing::event!(target: "openraft::replication", Level::WARN, error = "x", "error replication to target=2");
            tracing::event!(target: "openraft::core::raft_core", Level::ERROR, error = "x", target = 2, "while requesting vote");
            tracing::event!(target: "openraft::engine::handler::replication_handler", Level::WARN, request_id = 1, result = "x", "update progress error");
            // Kept.
            tracing::event!(target: "openraft::replication", Level::DEBUG, res = "Err", "replication action done");
            tracing::event!(target: "openraft::core::raft_core", Level::ERROR, error = "x", "quit RaftCore::main on error");
            tracing::event!(target: "openraft::core::raft_core", Level::ERROR, target = 2, "fail to join task");
            tracing::event!(target: "openraft::engine::handler::replication_handler", Level::ERROR, error = "x", "update_matching");
            tracing::event!(target: "netting_raft::network", Level::ERROR, error = "x", target = 2, "ours");
        });
        let got: Vec<bool> = verdicts.0.lock().unwrap().iter().map(|(_, d)| *d).collect();
        assert_eq!(
            got,
            [true, true, true, true, false, false, false, false, false],
            "{:?}",
            verdicts.0
        );
    }
}
