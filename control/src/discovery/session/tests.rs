#![allow(clippy::unwrap_used, clippy::expect_used)]

use netting_raft::catalog::CatalogCommand;

use super::*;
use crate::discovery::test_catalog::{self, subscription};

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn register(name: &str, octet: u8) -> CatalogCommand {
    test_catalog::register("default", name, octet)
}

/// A catalog with `default/web` written at version 1.
fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog.apply(1, &register("web", 1)).unwrap();
    catalog
}

fn state(base: Base) -> SessionState {
    SessionState::new(Arc::new(subscription(&["default"], &[])), base, ACK_TIMEOUT)
}

fn sent(action: Action) -> Response {
    match action {
        Action::Send(response) => response,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn change(version: LogIndex) -> Change {
    Change {
        version,
        reason: PushReason::CatalogChange,
        unchanged_since: None,
    }
}

fn upserted_names(update: &Update) -> Vec<String> {
    match update {
        Update::Delta { upserted, .. } | Update::Snapshot(upserted) => {
            upserted.iter().map(|s| s.key.to_string()).collect()
        }
    }
}

/// A sidecar without a usable version gets a snapshot; one that is current gets an empty
/// delta, so it learns it is current, and never a version below its own.
#[test]
fn the_first_response_is_a_snapshot_or_an_empty_delta() {
    let now = Instant::now();
    let catalog = catalog();

    let first = sent(state(Base::Nothing).on_open(&catalog, now));
    assert_eq!(first.update.kind(), "snapshot");
    assert_eq!(upserted_names(&first.update), ["default/web"]);
    assert_eq!((first.version, first.reason), (1, PushReason::Connect));
    assert_eq!(first.ack_deadline, now + ACK_TIMEOUT);

    let current = sent(state(Base::Version(1)).on_open(&catalog, now));
    assert_eq!(
        current.update,
        Update::Delta {
            from_version: 1,
            upserted: vec![],
            removed: vec![]
        }
    );

    // A sidecar may hold a version above this catalog's last change (writes it does not see).
    let ahead = sent(state(Base::Version(100)).on_open(&catalog, now));
    assert_eq!(ahead.version, 100);
}

/// Changes that arrive while an update is in flight wait; the answer to it sends one update
/// that covers all of them, from the version the sidecar acknowledged.
#[test]
fn one_update_in_flight_and_the_rest_coalesced() {
    let now = Instant::now();
    let mut catalog = catalog();
    let mut session = state(Base::Nothing);
    let first = sent(session.on_open(&catalog, now));

    catalog.apply(2, &register("api", 1)).unwrap();
    assert_eq!(
        session.on_change(change(2), &catalog, now),
        Action::Deferred { replaced: false }
    );
    catalog.apply(3, &register("db", 1)).unwrap();
    assert_eq!(
        session.on_change(change(3), &catalog, now),
        Action::Deferred { replaced: true }
    );

    let next = sent(session.on_ack(first.version, &first.nonce.to_string(), &catalog, now));
    assert_eq!(session.acked_version(), Some(1));
    assert_eq!(next.reason, PushReason::Pending);
    assert_eq!(next.version, 3);
    assert_ne!(next.nonce, first.nonce);
    match &next.update {
        Update::Delta { from_version, .. } => assert_eq!(*from_version, 1),
        other => panic!("expected a delta: {other:?}"),
    }
    assert_eq!(upserted_names(&next.update), ["default/api", "default/db"]);

    // Answered with nothing waiting: nothing more to send.
    assert_eq!(
        session.on_ack(next.version, &next.nonce.to_string(), &catalog, now),
        Action::Nothing
    );
    assert_eq!(session.acked_version(), Some(3));
}

/// A NACK leaves the sidecar where it was: the next update starts from the version it last
/// acknowledged, not from the one it refused.
#[test]
fn a_nack_keeps_the_base() {
    let now = Instant::now();
    let mut catalog = catalog();
    let mut session = state(Base::Version(1));
    let first = sent(session.on_open(&catalog, now));
    session.on_ack(first.version, &first.nonce.to_string(), &catalog, now);

    catalog.apply(2, &register("api", 1)).unwrap();
    let refused = sent(session.on_change(change(2), &catalog, now));
    assert_eq!(
        session.on_nack(refused.version, &refused.nonce.to_string(), &catalog, now),
        Action::Nothing
    );
    assert_eq!((session.nacks(), session.acked_version()), (1, Some(1)));

    catalog.apply(3, &register("db", 1)).unwrap();
    let retry = sent(session.on_change(change(3), &catalog, now));
    match retry.update {
        Update::Delta { from_version, .. } => assert_eq!(from_version, 1),
        other => panic!("expected a delta: {other:?}"),
    }
}

/// An answer that is not the response in flight (wrong nonce, right nonce with another
/// version, or nothing in flight) breaks the protocol and ends the stream, once.
#[test]
fn an_answer_to_another_response_ends_the_stream() {
    let now = Instant::now();
    let catalog = catalog();
    for (version, nonce) in [(1, "2"), (7, "1"), (1, "x")] {
        let mut session = state(Base::Nothing);
        sent(session.on_open(&catalog, now));
        let action = session.on_ack(version, nonce, &catalog, now);
        assert!(
            matches!(&action, Action::Close(Close::ProtocolError(why)) if why.contains(nonce)),
            "{version}/{nonce}: {action:?}"
        );
        assert!(session.is_closed());
        assert_eq!(session.on_nack(1, "1", &catalog, now), Action::Nothing);
        assert_eq!(session.on_change(change(9), &catalog, now), Action::Nothing);
    }

    let mut session = state(Base::Nothing);
    let first = sent(session.on_open(&catalog, now));
    session.on_ack(first.version, "1", &catalog, now);
    assert!(matches!(
        session.on_ack(first.version, "1", &catalog, now),
        Action::Close(Close::ProtocolError(_))
    ));
}

/// The acknowledgement timeout ends the stream exactly at the deadline of the response still
/// in flight, never before, and never for a response already answered.
#[test]
fn the_ack_timeout_holds_to_the_deadline() {
    let start = Instant::now();
    let catalog = catalog();
    let mut session = state(Base::Nothing);
    let first = sent(session.on_open(&catalog, start));

    let early = start + ACK_TIMEOUT - Duration::from_millis(1);
    assert_eq!(session.on_timeout(first.nonce, early), Action::Nothing);
    assert_eq!(
        session.on_timeout(first.nonce, start + ACK_TIMEOUT),
        Action::Close(Close::AckTimeout)
    );
    assert_eq!(
        session.on_timeout(first.nonce, start + ACK_TIMEOUT * 2),
        Action::Nothing,
        "a stream ends once"
    );

    let mut answered = state(Base::Nothing);
    let first = sent(answered.on_open(&catalog, start));
    answered.on_ack(first.version, "1", &catalog, start);
    assert_eq!(
        answered.on_timeout(first.nonce, start + ACK_TIMEOUT),
        Action::Nothing
    );
}

/// A change the sidecar already has, or one that left everything it was sent as it is, sends
/// nothing; one after what it was sent does.
#[test]
fn changes_the_sidecar_has_send_nothing() {
    let now = Instant::now();
    let mut catalog = catalog();
    let mut session = state(Base::Nothing);
    let first = sent(session.on_open(&catalog, now));
    session.on_ack(first.version, "1", &catalog, now);

    assert_eq!(session.on_change(change(1), &catalog, now), Action::Nothing);

    catalog.apply(2, &register("api", 1)).unwrap();
    let unchanged = Change {
        unchanged_since: Some(1),
        ..change(2)
    };
    assert_eq!(session.on_change(unchanged, &catalog, now), Action::Nothing);
    assert_eq!(sent(session.on_change(change(2), &catalog, now)).version, 2);
}

/// A change that touches nothing subscribed yields no empty delta after the first response.
#[test]
fn a_change_elsewhere_sends_nothing() {
    let now = Instant::now();
    let mut catalog = catalog();
    let mut session = state(Base::Nothing);
    let first = sent(session.on_open(&catalog, now));
    session.on_ack(first.version, "1", &catalog, now);
    catalog
        .apply(2, &test_catalog::register("prod", "db", 1))
        .unwrap();
    assert_eq!(session.on_change(change(2), &catalog, now), Action::Nothing);
}

/// Closing is final and happens once, whatever asks for it.
#[test]
fn a_stream_closes_once() {
    let now = Instant::now();
    let catalog = catalog();
    let mut session = state(Base::Nothing);
    sent(session.on_open(&catalog, now));
    assert_eq!(session.close(Close::MaxAge), Action::Close(Close::MaxAge));
    assert_eq!(session.close(Close::ClientGone), Action::Nothing);
    assert_eq!(session.on_timeout(1, now + ACK_TIMEOUT), Action::Nothing);
    assert!(Close::MaxAge.tells_the_sidecar() && !Close::ClientGone.tells_the_sidecar());
}
