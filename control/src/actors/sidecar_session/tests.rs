#![allow(clippy::unwrap_used, clippy::expect_used)]

use netting_raft::catalog::Catalog;
use netting_raft::catalog_handle::AppliedState;
use tokio::sync::mpsc::error::TryRecvError;

use super::*;
use crate::discovery::session::Response;

/// Stands in for the config pusher: accepts the session and forgets it.
struct PusherProbe;

impl Actor for PusherProbe {
    type Context = Context<Self>;
}

impl Handler<SessionOpened> for PusherProbe {
    type Result = ();
    fn handle(&mut self, _: SessionOpened, _: &mut Self::Context) {}
}

impl Handler<SessionClosed> for PusherProbe {
    type Result = ();
    fn handle(&mut self, _: SessionClosed, _: &mut Self::Context) {}
}

const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a session on an empty catalog and returns it with its outbound stream.
fn session() -> (Addr<SidecarSession>, mpsc::Receiver<Outbound>) {
    let pusher = PusherProbe.start();
    let (outbound, responses) = mpsc::channel(2);
    let start = SessionStart {
        id: 1,
        identity: SidecarIdentity {
            pod: "web-0".into(),
            namespace: "default".into(),
            proxy_version: "test".into(),
        },
        subscription: Subscription::default(),
        catalog: CatalogHandle::new(Catalog::default(), AppliedState::default()),
        outbound,
        base: Base::Nothing,
        pusher_open: pusher.clone().recipient(),
        pusher_closed: pusher.recipient(),
        limits: SessionLimits {
            ack_timeout: ACK_TIMEOUT,
            max_age: Duration::from_secs(3600),
        },
        applied_times: AppliedTimes::default(),
    };
    (SidecarSession::new(start).start(), responses)
}

fn response(outgoing: Outgoing) -> Response {
    match outgoing {
        Outgoing::Response(response) => response,
        Outgoing::Close(close) => panic!("expected a response, the stream closed: {close:?}"),
    }
}

/// Lets the actors run what is due at the current (paused) instant.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The ACK timeout holds as documented: a response still unacknowledged ends the stream (with
/// DEADLINE_EXCEEDED, see `grpc::discovery_convert`) `ack_timeout` after it was sent, within tokio's timer resolution of a
/// millisecond, and not before (it used to fire up to a quarter of the timeout late).
#[actix::test]
async fn unacknowledged_response_ends_the_stream_at_the_ack_timeout() {
    tokio::time::pause();
    let (_session, mut responses) = session();
    response(*responses.recv().await.unwrap());

    tokio::time::advance(ACK_TIMEOUT - Duration::from_millis(1)).await;
    settle().await;
    assert!(
        matches!(responses.try_recv(), Err(TryRecvError::Empty)),
        "closed before the timeout"
    );

    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    let ended = *responses.try_recv().unwrap();
    assert!(
        matches!(ended, Outgoing::Close(Close::AckTimeout)),
        "{ended:?}"
    );
}

/// An ACK in time cancels the timeout of that response: the stream stays open past it.
#[actix::test]
async fn acknowledged_response_does_not_time_out() {
    tokio::time::pause();
    let (session, mut responses) = session();
    let first = response(*responses.recv().await.unwrap());
    tokio::time::advance(ACK_TIMEOUT / 2).await;
    session
        .send(SidecarAck {
            version: first.version,
            nonce: first.nonce.to_string(),
        })
        .await
        .unwrap();
    tokio::time::advance(ACK_TIMEOUT).await;
    settle().await;
    assert!(
        matches!(responses.try_recv(), Err(TryRecvError::Empty)),
        "an acknowledged session was closed"
    );
}
