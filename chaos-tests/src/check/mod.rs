//! Invariant checks over a recorded history.
pub mod applied_once;
pub mod invariants;
pub mod linearizability;
pub mod replica_record;
