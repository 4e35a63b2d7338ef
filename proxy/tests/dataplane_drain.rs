//! Graceful shutdown of the data plane: draining lets requests in flight finish and refuses
//! new connections; the drain timeout closes what is left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// After `stop`, a slow request already in flight still gets its response, while new
/// connections are refused; then the data plane returns.
#[tokio::test]
async fn drain_lets_an_in_flight_request_finish_and_refuses_new_connections() {
    let (release, released) = watch::channel(false);
    let (app, backend) = named_backend(bind().await, "app", released);
    let proxy = proxy(app, routes(1, vec![Service::new("web", &[app])]))
        .start()
        .await;
    let client = http1_client();
    let url = proxy.url("/");
    let in_flight = tokio::spawn(async move { call(&client, get(&url)).await });
    eventually("the request reached the backend", || backend.hits() == 1).await;

    proxy.stop.send_replace(true);
    let address = proxy.address;
    within("listener closed", async {
        while TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    release.send_replace(true);
    let (status, body) = within("in-flight request", in_flight).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app 0"));
    within("data plane stopped", proxy.task).await.unwrap();
}

/// A TCP connection still open when the drain time is over is closed, and the data plane
/// returns.
#[tokio::test]
async fn the_drain_timeout_closes_connections_left_open() {
    let (server, _) = echo_backend(bind().await, b"");
    let proxy = proxy(server, routes(1, vec![]))
        .drain_timeout(Duration::from_millis(100))
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    stream.write_all(b"\x00hold").await.unwrap();
    let mut back = [0u8; 5];
    within("echo", stream.read_exact(&mut back)).await.unwrap();

    proxy.stop.send_replace(true);
    within("data plane stopped", proxy.task).await.unwrap();
    let mut rest = Vec::new();
    let closed = within("client connection closed", stream.read_to_end(&mut rest)).await;
    assert!(closed.is_err() || rest.is_empty(), "{closed:?}");
}

/// An idle HTTP/1 keep-alive connection does not hold the drain up: it is closed at once.
#[tokio::test]
async fn idle_http_connections_do_not_delay_the_drain() {
    let (_release, released) = watch::channel(true);
    let (app, _) = named_backend(bind().await, "app", released);
    let proxy = proxy(app, routes(1, vec![]))
        .drain_timeout(Duration::from_secs(3600))
        .start()
        .await;
    let client = http1_client();
    let (status, _) = call(&client, get(&proxy.url("/"))).await;
    assert_eq!(status, StatusCode::OK);
    // The client keeps its connection open; returning well within the hour-long drain
    // timeout means draining closed the idle connection.
    proxy.stop.send_replace(true);
    within("data plane stopped", proxy.task).await.unwrap();
}
