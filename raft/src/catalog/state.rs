//! The catalog state machine: services by key, each stamped with the log index that last
//! changed it, and tombstones of deleted services. Applying is a plain function of the state,
//! the command and its index, so every replica computes the same catalog and it can be tested
//! without Raft.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Applied, ApplyError, CatalogCommand};
use super::model::{Endpoint, EndpointSpec, LogIndex, Service, ServiceKey, ServiceSpec, Source};

/// Tombstones kept before the oldest are dropped; see [`Catalog::changes_since`].
pub const DEFAULT_MAX_TOMBSTONES: usize = 10_000;

/// The replicated service catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    cluster_id: Option<String>,
    #[serde(with = "super::map_as_pairs")]
    services: BTreeMap<ServiceKey, Service>,
    /// Deleted services and the index of their deletion.
    #[serde(with = "super::map_as_pairs")]
    tombstones: BTreeMap<ServiceKey, LogIndex>,
    /// Highest deletion index of a tombstone that was dropped: changes since a version below
    /// this can no longer be told as a delta.
    tombstone_floor: LogIndex,
    /// Index of the last log entry that changed the catalog.
    version: LogIndex,
    max_tombstones: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Self::with_max_tombstones(DEFAULT_MAX_TOMBSTONES)
    }
}

/// Everything that changed after a version: what a sidecar needs to move forward by a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesSince<'a> {
    pub upserted: Vec<&'a Service>,
    pub removed: Vec<ServiceKey>,
    pub version: LogIndex,
}

impl Catalog {
    pub fn with_max_tombstones(max_tombstones: usize) -> Self {
        Self {
            cluster_id: None,
            services: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            tombstone_floor: 0,
            version: 0,
            max_tombstones: max_tombstones.max(1),
        }
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Index of the last log entry that changed the catalog.
    pub fn version(&self) -> LogIndex {
        self.version
    }

    pub fn get(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// Services in key order, optionally of one namespace.
    pub fn list<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Service> + 'a> {
        match namespace {
            Some(ns) => Box::new(self.in_namespace(ns)),
            None => Box::new(self.services.values()),
        }
    }

    /// Services of one namespace, found through the key order rather than a scan.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .range(namespace_start(namespace)..)
            .take_while(move |(key, _)| key.namespace == namespace)
            .map(|(_, service)| service)
    }

    /// Deleted services of one namespace with the index of their deletion.
    pub fn tombstones_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a ServiceKey, LogIndex)> + 'a {
        self.tombstones
            .range(namespace_start(namespace)..)
            .take_while(move |(key, _)| key.namespace == namespace)
            .map(|(key, index)| (key, *index))
    }

    /// The deletion index of a deleted service, while its tombstone is kept.
    pub fn tombstone(&self, key: &ServiceKey) -> Option<LogIndex> {
        self.tombstones.get(key).copied()
    }

    /// Whether every deletion after `since` is still known, so a delta from it is exact.
    pub fn delta_possible_since(&self, since: LogIndex) -> bool {
        since >= self.tombstone_floor
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn endpoint_count(&self) -> usize {
        self.services.values().map(|s| s.endpoints.len()).sum()
    }

    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Services owned by one source, for reconciling that source.
    pub fn owned_by(&self, source: Source) -> impl Iterator<Item = &Service> + '_ {
        self.services.values().filter(move |s| s.source == source)
    }

    /// What changed after `since`, or `None` when tombstones needed to tell it were dropped
    /// (the caller then sends a full snapshot).
    pub fn changes_since(&self, since: LogIndex) -> Option<ChangesSince<'_>> {
        if since < self.tombstone_floor {
            return None;
        }
        let upserted = self
            .services
            .values()
            .filter(|s| s.modify_index > since)
            .collect();
        let removed = self
            .tombstones
            .iter()
            .filter(|(_, deleted)| **deleted > since)
            .map(|(key, _)| key.clone())
            .collect();
        Some(ChangesSince {
            upserted,
            removed,
            version: self.version,
        })
    }

    /// Applies one command at `index`. Indexes must be applied in increasing order; a command
    /// that changes nothing leaves every index untouched.
    pub fn apply(
        &mut self,
        index: LogIndex,
        command: &CatalogCommand,
    ) -> Result<Applied, ApplyError> {
        let changed = match command {
            CatalogCommand::InitCluster { cluster_id } => match &self.cluster_id {
                Some(existing) if existing == cluster_id => false,
                Some(existing) => return Err(ApplyError::ClusterIdAlreadySet(existing.clone())),
                None => {
                    self.cluster_id = Some(cluster_id.clone());
                    true
                }
            },
            CatalogCommand::RegisterEndpoint {
                key,
                source,
                endpoint,
                spec,
            } => self.register_endpoint(index, key, *source, endpoint, spec.as_ref())?,
            CatalogCommand::DeregisterEndpoint {
                key,
                endpoint,
                source,
            } => {
                let service = self
                    .services
                    .get_mut(key)
                    .ok_or_else(|| ApplyError::ServiceNotFound(key.clone()))?;
                if let Some(writer) = source {
                    check_owner(service, *writer)?;
                }
                if service.endpoints.remove(endpoint).is_none() {
                    return Err(ApplyError::EndpointNotFound {
                        key: key.clone(),
                        endpoint: *endpoint,
                    });
                }
                service.modify_index = index;
                true
            }
            CatalogCommand::PutService {
                key,
                source,
                spec,
                endpoints,
            } => self.put_service(index, key, *source, spec, endpoints)?,
            CatalogCommand::DeleteService { key, source } => {
                let service = self
                    .services
                    .get(key)
                    .ok_or_else(|| ApplyError::ServiceNotFound(key.clone()))?;
                if let Some(writer) = source {
                    check_owner(service, *writer)?;
                }
                self.services.remove(key);
                self.tombstones.insert(key.clone(), index);
                self.trim_tombstones();
                true
            }
        };
        if changed {
            self.version = index;
        }
        Ok(Applied { changed })
    }

    fn register_endpoint(
        &mut self,
        index: LogIndex,
        key: &ServiceKey,
        source: Source,
        endpoint: &EndpointSpec,
        spec: Option<&ServiceSpec>,
    ) -> Result<bool, ApplyError> {
        let service = match self.services.get_mut(key) {
            Some(service) => {
                check_owner(service, source)?;
                service
            }
            None => {
                self.tombstones.remove(key);
                self.services.entry(key.clone()).or_insert(Service {
                    key: key.clone(),
                    spec: ServiceSpec::default(),
                    endpoints: BTreeMap::new(),
                    source,
                    create_index: index,
                    modify_index: index,
                })
            }
        };
        let mut changed = service.create_index == index;
        if let Some(spec) = spec
            && service.spec != *spec
        {
            service.spec = spec.clone();
            changed = true;
        }
        let unchanged_endpoint = service
            .endpoints
            .get(&endpoint.id)
            .is_some_and(|existing| existing.spec == *endpoint);
        if !unchanged_endpoint {
            service.endpoints.insert(
                endpoint.id,
                Endpoint {
                    spec: endpoint.clone(),
                    modify_index: index,
                },
            );
            changed = true;
        }
        if changed {
            service.modify_index = index;
        }
        Ok(changed)
    }

    fn put_service(
        &mut self,
        index: LogIndex,
        key: &ServiceKey,
        source: Source,
        spec: &ServiceSpec,
        endpoints: &[EndpointSpec],
    ) -> Result<bool, ApplyError> {
        let wanted: BTreeMap<_, _> = endpoints.iter().map(|e| (e.id, e)).collect();
        if let Some(existing) = self.services.get(key) {
            check_owner(existing, source)?;
            let same_endpoints = existing.endpoints.len() == wanted.len()
                && existing
                    .endpoints
                    .iter()
                    .all(|(id, e)| wanted.get(id).is_some_and(|w| **w == e.spec));
            if existing.spec == *spec && same_endpoints {
                return Ok(false);
            }
        }
        self.tombstones.remove(key);
        let previous = self.services.remove(key);
        let create_index = previous.as_ref().map_or(index, |s| s.create_index);
        let endpoints = wanted
            .into_iter()
            .map(|(id, spec)| {
                // An endpoint that did not change keeps its index.
                let modify_index = previous
                    .as_ref()
                    .and_then(|s| s.endpoints.get(&id))
                    .filter(|e| e.spec == *spec)
                    .map_or(index, |e| e.modify_index);
                let endpoint = Endpoint {
                    spec: spec.clone(),
                    modify_index,
                };
                (id, endpoint)
            })
            .collect();
        self.services.insert(
            key.clone(),
            Service {
                key: key.clone(),
                spec: spec.clone(),
                endpoints,
                source,
                create_index,
                modify_index: index,
            },
        );
        Ok(true)
    }

    fn trim_tombstones(&mut self) {
        // Trim in batches so the sort is paid once per tenth of the budget, not per delete.
        let slack = self.max_tombstones / 10;
        if self.tombstones.len() <= self.max_tombstones + slack {
            return;
        }
        let mut by_index: Vec<(LogIndex, ServiceKey)> = self
            .tombstones
            .iter()
            .map(|(k, i)| (*i, k.clone()))
            .collect();
        by_index.sort_unstable();
        let excess = self.tombstones.len() - self.max_tombstones;
        for (deleted, key) in by_index.into_iter().take(excess) {
            self.tombstones.remove(&key);
            self.tombstone_floor = self.tombstone_floor.max(deleted);
        }
    }
}

/// A source changes only the services it owns: the catalog file never takes over or removes
/// what the API registered, nor the API what the file or Kubernetes own.
fn check_owner(service: &Service, writer: Source) -> Result<(), ApplyError> {
    if service.source == writer {
        return Ok(());
    }
    Err(ApplyError::OwnedByOtherSource {
        key: service.key.clone(),
        owner: service.source.as_str().to_owned(),
        writer: writer.as_str().to_owned(),
    })
}

fn namespace_start(namespace: &str) -> ServiceKey {
    ServiceKey {
        namespace: namespace.to_owned(),
        name: String::new(),
    }
}

#[cfg(test)]
mod tests;
