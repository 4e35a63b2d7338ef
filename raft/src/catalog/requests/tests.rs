#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::catalog::command::CatalogCommand;
use crate::catalog::model::{EndpointId, EndpointSpec, ServiceKey, Source};

fn key() -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: "web".into(),
    }
}

fn endpoint(zone: &str) -> EndpointSpec {
    EndpointSpec {
        id: EndpointId {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 8080,
        },
        ready: true,
        zone: Some(zone.into()),
        pod: None,
    }
}

fn register(zone: &str) -> CatalogCommand {
    CatalogCommand::RegisterEndpoint {
        key: key(),
        source: Source::Api,
        endpoint: endpoint(zone),
        spec: None,
    }
}

fn id(client: &str, sequence: u64) -> RequestId {
    RequestId {
        client: client.into(),
        sequence,
    }
}

fn one(request: Option<RequestId>, command: CatalogCommand) -> CommandBatch {
    CommandBatch::new([(request, command)])
}

fn zone_of(catalog: &Catalog) -> Option<String> {
    catalog
        .get(&key())
        .and_then(|s| s.endpoints.values().next())
        .and_then(|e| e.spec.zone.clone())
}

/// The shape of the bug that made a linearizable read return an older value: writer A's
/// request is applied, writer B changes the same endpoint, then A's retry arrives. The retry
/// must be answered with A's original result and version, and B's value must stay.
#[test]
fn a_retry_after_another_writer_does_not_undo_its_change() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::default();
    let first = apply_batch(
        &mut catalog,
        &mut requests,
        5,
        &one(Some(id("a", 1)), register("a-value")),
    );
    let _ = apply_batch(
        &mut catalog,
        &mut requests,
        6,
        &one(Some(id("b", 1)), register("b-value")),
    );
    let retry = apply_batch(
        &mut catalog,
        &mut requests,
        7,
        &one(Some(id("a", 1)), register("a-value")),
    );

    assert_eq!(zone_of(&catalog).as_deref(), Some("b-value"));
    assert_eq!(catalog.version(), 6);
    let original = &first.outcomes[0];
    assert_eq!(
        retry.outcomes,
        vec![Outcome {
            duplicate: true,
            ..original.clone()
        }]
    );
    assert_eq!(original.version, 5);
    assert!(retry.applied_requests.is_empty());
}

/// A refusal is an answer too: a retry of a refused write is refused the same way, even if the
/// catalog has changed so that it would now succeed.
#[test]
fn a_retry_of_a_refused_write_gets_the_same_refusal() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::default();
    let remove = CatalogCommand::DeleteService {
        key: key(),
        source: Some(Source::Api),
    };
    let first = apply_batch(
        &mut catalog,
        &mut requests,
        2,
        &one(Some(id("a", 1)), remove.clone()),
    );
    assert!(matches!(
        first.outcomes[0].result,
        Err(ApplyError::ServiceNotFound(_))
    ));
    let _ = apply_batch(&mut catalog, &mut requests, 3, &one(None, register("x")));
    let retry = apply_batch(
        &mut catalog,
        &mut requests,
        4,
        &one(Some(id("a", 1)), remove),
    );
    assert_eq!(retry.outcomes[0].result, first.outcomes[0].result);
    assert!(retry.outcomes[0].duplicate);
    assert!(catalog.get(&key()).is_some(), "the retry must not delete");
}

/// The same request twice in one entry (a retry batched with its first try) is applied once.
#[test]
fn the_same_request_twice_in_one_batch_is_applied_once() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::default();
    let batch = CommandBatch::new([
        (Some(id("a", 1)), register("first")),
        (Some(id("b", 1)), register("second")),
        (Some(id("a", 1)), register("first")),
    ]);
    let applied = apply_batch(&mut catalog, &mut requests, 9, &batch);
    assert_eq!(zone_of(&catalog).as_deref(), Some("second"));
    assert_eq!(applied.applied_requests, vec![id("a", 1), id("b", 1)]);
    assert!(!applied.outcomes[0].duplicate);
    assert!(applied.outcomes[2].duplicate);
    assert_eq!(applied.outcomes[2].result, applied.outcomes[0].result);
    assert_eq!(applied.outcomes[2].version, 9);
}

/// Commands without an id are applied every time, as before request ids existed.
#[test]
fn commands_without_an_id_are_always_applied() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::default();
    let _ = apply_batch(&mut catalog, &mut requests, 1, &one(None, register("a")));
    let _ = apply_batch(&mut catalog, &mut requests, 2, &one(None, register("b")));
    let again = apply_batch(&mut catalog, &mut requests, 3, &one(None, register("a")));
    assert_eq!(zone_of(&catalog).as_deref(), Some("a"));
    assert!(!again.outcomes[0].duplicate);
    assert!(requests.is_empty());
}

/// The record is bounded; a request older than what is kept for its client is refused, never
/// applied, and a client whose every result was dropped is forgotten.
#[test]
fn the_record_is_bounded_and_old_requests_expire() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::with_capacity(3);
    for sequence in 1..=4 {
        let zone = format!("v{sequence}");
        let _ = apply_batch(
            &mut catalog,
            &mut requests,
            sequence,
            &one(Some(id("a", sequence)), register(&zone)),
        );
    }
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests.check(&id("a", 1)),
        Seen::Expired { oldest_kept: 2 }
    );
    let late = apply_batch(
        &mut catalog,
        &mut requests,
        10,
        &one(Some(id("a", 1)), register("v1")),
    );
    assert!(matches!(
        late.outcomes[0].result,
        Err(ApplyError::RequestExpired { request: 1, .. })
    ));
    assert_eq!(zone_of(&catalog).as_deref(), Some("v4"));
    assert!(matches!(requests.check(&id("a", 4)), Seen::Duplicate(_)));

    for sequence in 1..=3 {
        let _ = apply_batch(
            &mut catalog,
            &mut requests,
            10 + sequence,
            &one(Some(id("b", sequence)), register("b")),
        );
    }
    assert_eq!(requests.client_count(), 1);
    assert_eq!(requests.check(&id("a", 4)), Seen::New);
}

/// The record survives a snapshot: it is serialised with the state and read back the same,
/// with the production bound.
#[test]
fn the_record_round_trips_through_json() {
    let mut catalog = Catalog::default();
    let mut requests = RequestTable::default();
    let _ = apply_batch(
        &mut catalog,
        &mut requests,
        1,
        &one(Some(id("a", 7)), register("x")),
    );
    let encoded = serde_json::to_vec(&requests).expect("encode");
    let decoded: RequestTable = serde_json::from_slice(&encoded).expect("decode");
    assert_eq!(decoded, requests);
    assert!(matches!(decoded.check(&id("a", 7)), Seen::Duplicate(r) if r.index == 1));
}

/// Entries written before request ids existed decode as batches without ids.
#[test]
fn batches_without_request_ids_still_decode() {
    let old =
        br#"{"commands":[{"op":"delete_service","key":{"namespace":"default","name":"web"}}]}"#;
    let batch: CommandBatch = serde_json::from_slice(old).expect("decode an old entry");
    let requests: Vec<_> = batch.requests().collect();
    assert_eq!(
        requests,
        vec![(
            None,
            &CatalogCommand::DeleteService {
                key: key(),
                source: None
            }
        )]
    );
}
