//! Opaque TCP through the data plane on loopback: client-first and server-first protocols,
//! per-connection balancing, and a service with nothing to connect to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use netting_proxy::dataplane::OriginalDestination;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `message` and reads it back (the backend echoes).
async fn echo(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, message);
}

/// Bytes that are not HTTP pass through untouched, both ways, to a destination outside the
/// catalog; a half-close reaches the other side.
#[tokio::test]
async fn raw_bytes_pass_through_as_tcp() {
    let (server, accepted) = echo_backend(bind().await, b"");
    let proxy = proxy(server, routes(1, vec![])).start().await;
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    echo(&mut stream, b"hello proxy\n").await;
    echo(&mut stream, &[0u8, 1, 2, 255, 254, 13, 10]).await;
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("close after half-close", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A server-speaks-first protocol (the client waits for a greeting): the proxy, having heard
/// nothing from the client, connects as TCP and the greeting arrives.
#[tokio::test]
async fn a_server_speaks_first_protocol_works() {
    let (server, _) = echo_backend(bind().await, b"220 smtp.test ESMTP ready\r\n");
    let proxy = proxy(server, routes(1, vec![Service::new("mail", &[server])]))
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    let greeting = b"220 smtp.test ESMTP ready\r\n";
    let mut heard = vec![0u8; greeting.len()];
    within("greeting", stream.read_exact(&mut heard))
        .await
        .unwrap();
    assert_eq!(&heard, greeting);
    echo(&mut stream, b"EHLO client\r\n").await;
}

/// Connections to a catalog destination are balanced per connection: with connections held
/// open, both endpoints get some.
#[tokio::test]
async fn tcp_connections_are_balanced_over_the_service_endpoints() {
    let [first, second] = <[TcpListener; 2]>::try_from(same_port(2).await).unwrap();
    let (a, accepted_a) = echo_backend(first, b"");
    let (b, accepted_b) = echo_backend(second, b"");
    let proxy = proxy(a, routes(1, vec![Service::new("db", &[a, b])]))
        .start()
        .await;
    let mut open = Vec::new();
    for i in 0..4u8 {
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        // Not HTTP, so detected at once; the echo proves the upstream connection is made.
        echo(&mut stream, &[0, i]).await;
        open.push(stream);
    }
    let (a, b) = (
        accepted_a.load(Ordering::SeqCst),
        accepted_b.load(Ordering::SeqCst),
    );
    assert!(a > 0 && b > 0 && a + b == 4, "a: {a}, b: {b}");
}

/// A catalog service with no ready endpoint: the client's connection is closed.
#[tokio::test]
async fn a_tcp_connection_to_a_service_without_endpoints_is_closed() {
    let unready = refused_beside(&bind().await);
    let mut service = Service::new("down", &[]);
    service.not_ready.push(unready);
    let to_service = proxy(unready, routes(1, vec![service])).start().await;
    let received = raw_exchange(to_service.address, b"\x01\x02 not http", b"").await;
    assert!(received.is_empty());
    // The same for a destination that refuses the connection.
    let refused = refused_beside(&bind().await);
    let passthrough = proxy(refused, routes(1, vec![])).start().await;
    let received = raw_exchange(passthrough.address, b"\x01\x02 not http", b"").await;
    assert!(received.is_empty());
}

/// A connection made straight to the listener (not redirected) has the listener as its
/// original destination: it is closed rather than forwarded to the proxy itself.
#[tokio::test]
async fn a_connection_that_was_not_redirected_is_closed() {
    let itself = OriginalDestination::Lookup(Arc::new(|stream: &TcpStream| stream.local_addr()));
    let proxy = proxy(refused_beside(&bind().await), routes(1, vec![]))
        .destination(itself)
        .start()
        .await;
    let received = raw_exchange(proxy.address, b"GET / HTTP/1.1\r\n\r\n", b"").await;
    assert!(received.is_empty());
}
