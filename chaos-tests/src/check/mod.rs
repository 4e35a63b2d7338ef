//! Invariant checks over a recorded history.
pub mod invariants;
pub mod linearizability;
