//! Logging set-up of `netting-control` and `nettingctl`: see `netting_log` for the variables
//! (`NETTING_LOG`, `NETTING_LOG_FORMAT`, `NO_COLOR`).

/// Installs the global subscriber of a replica (and of `dev`, which logs little itself):
/// `info`, openraft at `warn`, and openraft's per-attempt peer failures left to
/// `netting_raft::network::peer_health`.
pub fn init_tracing() {
    netting_log::init_dropping(
        "info,openraft=warn",
        netting_raft::log_noise::is_replaced_openraft_event,
    );
}

/// The subscriber of `nettingctl`: only warnings, since its own output is the answer.
pub fn init_cli_tracing() {
    netting_log::init("warn");
}
