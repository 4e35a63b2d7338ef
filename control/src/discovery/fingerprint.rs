//! A fingerprint of what sidecars use of each service, so that a change to anything else
//! (labels, owning pods, source) is recognised as no change for sidecars.
//!
//! The config pusher fingerprints every service a change touched, while it holds the catalog's
//! read lock (which the state machine's apply waits for). Hashing a large service from scratch
//! on every push would make each push cost the size of the services it touched, not the size
//! of the change: a service of 2,000 endpoints gaining one would be hashed whole, on every
//! push. So each endpoint's hash is kept with the log index that last changed it, and only
//! endpoints changed since are hashed again; the rest of a service costs a walk over its ids.
//!
//! An endpoint's `modify_index` names one content: the state machine applies an entry's
//! commands under one write lock, so no reader sees an endpoint between two changes made at
//! the same index.
//!
//! Every hash is taken of the values built by `view`'s constructors, the same values sidecars
//! are sent, so the fingerprint cannot leave out a field the update carries.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use netting_raft::catalog::{Endpoint, EndpointId, LogIndex, Service, ServiceKey};

use super::view::{EndpointView, PolicyView, PortView, ServiceView};

/// The fingerprint of each service last recorded.
#[derive(Debug, Default)]
pub struct Fingerprints {
    services: HashMap<ServiceKey, ServicePrint>,
}

#[derive(Debug)]
struct ServicePrint {
    print: u64,
    /// The service's `modify_index` when recorded: nothing in it changed while it is the same.
    modify_index: LogIndex,
    /// Each endpoint's id, the index that last changed it and the hash of its view, in id
    /// order (the order of the catalog's map).
    endpoints: Vec<(EndpointId, LogIndex, u64)>,
}

impl Fingerprints {
    /// Records `service` as it is now; returns whether sidecars would see it differently than
    /// when it was last recorded (a service never recorded is a change).
    pub fn update(&mut self, service: &Service) -> bool {
        match self.services.get_mut(&service.key) {
            Some(recorded) if recorded.modify_index == service.modify_index => false,
            Some(recorded) => {
                let before = recorded.print;
                let now = ServicePrint::of(service, &recorded.endpoints);
                *recorded = now;
                recorded.print != before
            }
            None => {
                self.services
                    .insert(service.key.clone(), ServicePrint::of(service, &[]));
                true
            }
        }
    }

    /// Forgets `key`; returns whether it had been recorded.
    pub fn remove(&mut self, key: &ServiceKey) -> bool {
        self.services.remove(key).is_some()
    }

    /// Forgets every service.
    pub fn clear(&mut self) {
        self.services.clear();
    }

    /// The fingerprint recorded for `key`.
    #[cfg(test)]
    fn get(&self, key: &ServiceKey) -> Option<u64> {
        self.services.get(key).map(|p| p.print)
    }
}

impl ServicePrint {
    /// The print of `service`, reusing the hash of every endpoint `cached` holds at the index
    /// that last changed it.
    fn of(service: &Service, cached: &[(EndpointId, LogIndex, u64)]) -> Self {
        let mut cached = cached.iter().peekable();
        let mut endpoints = Vec::with_capacity(service.endpoints.len());
        for (id, endpoint) in &service.endpoints {
            while cached.next_if(|(seen, _, _)| seen < id).is_some() {}
            let hash =
                match cached.next_if(|(seen, at, _)| seen == id && *at == endpoint.modify_index) {
                    Some((_, _, hash)) => *hash,
                    None => endpoint_hash(endpoint),
                };
            endpoints.push((*id, endpoint.modify_index, hash));
        }

        // Everything a `ServiceView` holds, in its order, each part as its constructor
        // builds it.
        let mut hasher = DefaultHasher::new();
        service.key.hash(&mut hasher);
        hasher.write_usize(service.spec.ports.len());
        for port in &service.spec.ports {
            PortView::of(port).hash(&mut hasher);
        }
        hasher.write_usize(endpoints.len());
        for (_, _, hash) in &endpoints {
            hasher.write_u64(*hash);
        }
        PolicyView::of(&service.spec.policy).hash(&mut hasher);
        Self {
            print: hasher.finish(),
            modify_index: service.modify_index,
            endpoints,
        }
    }
}

fn endpoint_hash(endpoint: &Endpoint) -> u64 {
    let mut hasher = DefaultHasher::new();
    EndpointView::of(endpoint).hash(&mut hasher);
    hasher.finish()
}

/// Adding a field to `ServiceView` stops this from compiling: the fingerprint above must then
/// hash it too, or sidecars would miss changes to it.
const _: fn(&ServiceView) = |ServiceView {
                                 key: _,
                                 ports: _,
                                 endpoints: _,
                                 policy: _,
                             }| {};

#[cfg(test)]
mod tests;
