//! Which register a worker touches next.
//!
//! There are a few slots, each a catalog service (`reg-<slot>`) in the register namespace.
//! A slot holds one current register at a time: an endpoint whose address encodes the slot's
//! generation. After a fixed number of operations on a generation, its last write removes the
//! endpoint and the slot moves on to a new address. Checking linearizability is exponential in
//! the concurrency of one register's history; rotating keeps every history short, and removing
//! old generations keeps the services (and so the sidecars' updates) small.

use std::sync::Mutex;
use std::sync::PoisonError;

/// One register: a service and the endpoint address within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegisterKey {
    pub service: String,
    pub address: String,
    pub port: u32,
}

impl RegisterKey {
    /// `service/address:port`, the key the history records.
    pub fn name(&self) -> String {
        format!("{}/{}:{}", self.service, self.address, self.port)
    }
}

/// What the keyspace hands a worker: the register, and whether this operation must be the
/// removal that retires the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: RegisterKey,
    pub retire: bool,
}

/// The register slots, shared by all workers.
#[derive(Debug)]
pub struct Keyspace {
    slots: Vec<Mutex<Slot>>,
    ops_per_generation: u32,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    issued: u32,
}

pub const REGISTER_PORT: u32 = 80;

impl Keyspace {
    pub fn new(slots: usize, ops_per_generation: u32) -> Keyspace {
        Keyspace {
            slots: (0..slots.max(1))
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            ops_per_generation: ops_per_generation.max(2),
        }
    }

    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The register of `slot` for one more operation.
    pub fn assign(&self, slot: usize) -> Assignment {
        let index = slot % self.slots.len();
        let mut state = self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.issued += 1;
        let generation = state.generation;
        let retire = state.issued >= self.ops_per_generation;
        if retire {
            state.generation += 1;
            state.issued = 0;
        }
        Assignment {
            key: key_of(index, generation),
            retire,
        }
    }

    /// The register `slot` is on now (for reads, which do not advance the generation).
    pub fn current(&self, slot: usize) -> RegisterKey {
        let index = slot % self.slots.len();
        let generation = self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .generation;
        key_of(index, generation)
    }

    /// Every register used so far, for the final reads.
    pub fn all_used(&self) -> Vec<RegisterKey> {
        let mut keys = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let generation = slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .generation;
            keys.extend((0..=generation).map(|g| key_of(index, g)));
        }
        keys
    }
}

/// `reg-<slot>` and an address from the 100.64/10 range that encodes the generation.
fn key_of(slot: usize, generation: u32) -> RegisterKey {
    let [_, b, c, d] = generation.to_be_bytes();
    RegisterKey {
        service: format!("reg-{slot}"),
        address: format!("100.{}.{c}.{d}", 64 + (b & 0x3f)),
        port: REGISTER_PORT,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_ends_with_one_retiring_operation() {
        let keys = Keyspace::new(2, 3);
        let first: Vec<Assignment> = (0..3).map(|_| keys.assign(0)).collect();
        assert!(first.iter().all(|a| a.key == first[0].key));
        assert_eq!(
            first.iter().map(|a| a.retire).collect::<Vec<_>>(),
            [false, false, true]
        );
        let next = keys.assign(0);
        assert_ne!(next.key, first[0].key);
        assert_eq!(keys.current(0), next.key);
        // The other slot did not move.
        assert_eq!(keys.current(1).address, "100.64.0.0");
        assert_eq!(keys.all_used().len(), 3);
    }

    #[test]
    fn keys_are_distinct_across_slots_and_generations() {
        let a = key_of(0, 1);
        let b = key_of(1, 1);
        let c = key_of(0, 256);
        assert_ne!(a.name(), b.name());
        assert_ne!(a.name(), c.name());
        assert_eq!(c.address, "100.64.1.0");
    }
}
