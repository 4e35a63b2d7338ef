//! HTTP through the data plane on loopback: balancing, routing changes, upstream failures,
//! timeouts, retries and their budget, bad clients, headers, upgrades, inbound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use netting_proxy::balance::{Balancer, InFlight};
use netting_proxy::dataplane::{BudgetConfig, Options};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Sends `count` requests at once with `client`, waits until the backends hold all of them,
/// then releases them; returns the response bodies.
async fn concurrent_round(
    proxy: &Proxy,
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    backends: &[&Named],
    release: &watch::Sender<bool>,
    count: usize,
) -> Vec<String> {
    release.send_replace(false);
    let before: usize = backends.iter().map(|b| b.hits()).sum();
    let requests: Vec<_> = (0..count)
        .map(|_| {
            let client = client.clone();
            let url = proxy.url("/");
            tokio::spawn(async move { call(&client, get(&url)).await })
        })
        .collect();
    eventually("all requests held by the backends", || {
        backends.iter().map(|b| b.hits()).sum::<usize>() == before + count
    })
    .await;
    release.send_replace(true);
    let mut bodies = Vec::new();
    for request in requests {
        let (status, body) = within("request", request).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        bodies.push(body);
    }
    bodies
}

/// HTTP/1.1 requests to a catalog destination go to both of its endpoints, each request
/// balanced on its own (requests in flight make an endpoint costlier).
#[tokio::test]
async fn http1_requests_are_balanced_over_the_service_endpoints() {
    let (release, released) = watch::channel(true);
    let [first, second] = <[TcpListener; 2]>::try_from(same_port(2).await).unwrap();
    let (a, backend_a) = named_backend(first, "a", released.clone());
    let (b, backend_b) = named_backend(second, "b", released);
    let proxy = proxy(a, routes(1, vec![Service::new("web", &[a, b])]))
        .start()
        .await;
    let client = http1_client();
    let bodies = concurrent_round(&proxy, &client, &[&backend_a, &backend_b], &release, 8).await;
    assert!(backend_a.hits() > 0 && backend_b.hits() > 0, "{bodies:?}");
    assert_eq!(backend_a.hits() + backend_b.hits(), 8);
}

/// h2c (prior knowledge) requests are proxied over HTTP/2 and balanced per request, though
/// they share one client connection.
#[tokio::test]
async fn h2c_requests_are_balanced_over_the_service_endpoints() {
    let (release, released) = watch::channel(true);
    let [first, second] = <[TcpListener; 2]>::try_from(same_port(2).await).unwrap();
    let (a, backend_a) = named_backend(first, "a", released.clone());
    let (b, backend_b) = named_backend(second, "b", released);
    let proxy = proxy(a, routes(1, vec![Service::new("grpc", &[a, b])]))
        .start()
        .await;
    let client = h2c_client();
    let bodies = concurrent_round(&proxy, &client, &[&backend_a, &backend_b], &release, 8).await;
    assert!(backend_a.hits() > 0 && backend_b.hits() > 0, "{bodies:?}");
    // A request with a body goes through too, on the same connection.
    let request = Request::post(proxy.url("/upload"))
        .body(Body::new(Bytes::from_static(b"12345")))
        .unwrap();
    let (status, body) = call(&client, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with(" 5"), "{body}");
}

/// A new routing table applies to the next request, even on connections opened before it:
/// an endpoint that left the catalog gets nothing more.
#[tokio::test]
async fn an_endpoint_removed_from_the_routes_gets_no_more_requests() {
    let (release, released) = watch::channel(true);
    let [first, second] = <[TcpListener; 2]>::try_from(same_port(2).await).unwrap();
    let (a, backend_a) = named_backend(first, "a", released.clone());
    let (b, backend_b) = named_backend(second, "b", released);
    let proxy = proxy(a, routes(1, vec![Service::new("web", &[a, b])]))
        .start()
        .await;
    let client = http1_client();
    concurrent_round(&proxy, &client, &[&backend_a, &backend_b], &release, 6).await;
    let b_before = backend_b.hits();
    assert!(b_before > 0);

    proxy
        .routes
        .send_replace(Arc::new(routes(2, vec![Service::new("web", &[a])])));
    let bodies = concurrent_round(&proxy, &client, &[&backend_a, &backend_b], &release, 6).await;
    assert_eq!(backend_b.hits(), b_before, "{bodies:?}");
    assert!(
        bodies.iter().all(|body| body.starts_with("a ")),
        "{bodies:?}"
    );
}

/// Requests one after another reuse one pooled upstream connection, whether they come on one
/// client connection or several.
#[tokio::test]
async fn sequential_requests_reuse_a_pooled_upstream_connection() {
    let (app, accepted) = http_backend_counting(bind().await, |_| async {
        text(StatusCode::OK, "x".repeat(20_000))
    });
    let proxy = proxy(app, routes(1, vec![Service::new("web", &[app])]))
        .start()
        .await;
    for _ in 0..3 {
        let client = http1_client();
        for _ in 0..5 {
            let (status, body) = call(&client, get(&proxy.url("/"))).await;
            assert_eq!((status, body.len()), (StatusCode::OK, 20_000));
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A service without a ready endpoint: 503, and the proxy says so in a short body.
#[tokio::test]
async fn a_service_without_ready_endpoints_gets_503() {
    let unready = refused_beside(&bind().await);
    let mut service = Service::new("down", &[]);
    service.not_ready.push(unready);
    let proxy = proxy(unready, routes(1, vec![service])).start().await;
    let (status, body) = call(&http1_client(), get(&proxy.url("/"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no endpoint"), "{body}");
}

/// An upstream that drops the connection before answering: 502 to that request, and the
/// next request (on a fresh upstream connection) works.
#[tokio::test]
async fn an_upstream_reset_gets_502_and_the_next_request_works() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let healthy = http_backend(bind().await, |_| async { text(StatusCode::OK, "fine") });
    tokio::spawn(async move {
        // The first connection is reset once the request is in; later ones are passed to
        // a healthy server.
        let (mut first, _) = listener.accept().await.unwrap();
        let mut buffer = [0u8; 1024];
        let _ = first.read(&mut buffer).await;
        first.set_zero_linger().unwrap();
        drop(first);
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut server = TcpStream::connect(healthy).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let proxy = proxy(
        upstream,
        routes(1, vec![Service::new("flaky", &[upstream])]),
    )
    .start()
    .await;
    let client = http1_client();
    let (status, body) = call(&client, get(&proxy.url("/"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let (status, body) = call(&client, get(&proxy.url("/"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
}

/// An upstream slower than the service's request timeout: 504 once the timeout is over
/// (the backend would take 30 s; the timeout is 200 ms).
#[tokio::test]
async fn a_slow_upstream_gets_504_after_the_request_timeout() {
    let slow = http_backend(bind().await, |_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(StatusCode::OK, "too late")
    });
    let service = Service::new("slow", &[slow]).timeout(Duration::from_millis(200));
    let proxy = proxy(slow, routes(1, vec![service])).start().await;
    let started = std::time::Instant::now();
    let (status, body) = call(&http1_client(), get(&proxy.url("/"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// Keeps `endpoint` looking busy to the balancer, so that the other endpoint is picked first.
fn make_busy(balancer: &Arc<Balancer>, endpoint: std::net::SocketAddr) -> Vec<InFlight> {
    (0..3).map(|_| balancer.start(endpoint)).collect()
}

/// A GET whose first endpoint refuses the connection is retried on the other endpoint; a
/// POST is not retried and gets 502.
#[tokio::test]
async fn idempotent_requests_are_retried_on_another_endpoint_and_posts_are_not() {
    let (_release, released) = watch::channel(true);
    let listener = bind().await;
    let dead = refused_beside(&listener);
    let (live, backend) = named_backend(listener, "live", released);
    let catalog = || routes(1, vec![Service::new("web", &[dead, live]).retries(2)]);

    let balancer = Arc::new(Balancer::seeded(1));
    let _busy = make_busy(&balancer, live);
    let proxy_get = proxy(live, catalog()).balancer(balancer).start().await;
    let (status, body) = call(&http1_client(), get(&proxy_get.url("/"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "live 0"));
    assert_eq!(backend.hits(), 1);
    let (dead_estimate, _) = proxy_get.balancer.snapshot(dead).unwrap();
    assert!(
        dead_estimate >= Duration::from_millis(500),
        "the failure was not recorded"
    );

    let balancer = Arc::new(Balancer::seeded(1));
    let _busy = make_busy(&balancer, live);
    let proxy_post = proxy(live, catalog()).balancer(balancer).start().await;
    let request = Request::post(proxy_post.url("/"))
        .body(Body::new(Bytes::from_static(b"order")))
        .unwrap();
    let (status, body) = call(&http1_client(), request).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(backend.hits(), 1, "the POST reached the other endpoint");
}

/// Small idempotent bodies are held and sent again on retry.
#[tokio::test]
async fn a_put_with_a_small_body_is_retried_with_its_body() {
    let (_release, released) = watch::channel(true);
    let listener = bind().await;
    let dead = refused_beside(&listener);
    let (live, backend) = named_backend(listener, "live", released);
    let balancer = Arc::new(Balancer::seeded(1));
    let _busy = make_busy(&balancer, live);
    let catalog = routes(1, vec![Service::new("web", &[dead, live]).retries(1)]);
    let proxy = proxy(live, catalog).balancer(balancer).start().await;
    let request = Request::put(proxy.url("/item"))
        .body(Body::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    let (status, body) = call(&http1_client(), request).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "live 10"));
    assert_eq!(backend.hits(), 1);
}

/// During an outage every request fails and asks for retries; the budget (20% of requests,
/// no floor here) lets through only a few: 10 requests × up to 3 retries would be 40
/// attempts, the budget allows 12.
#[tokio::test]
async fn the_retry_budget_caps_retries_during_an_outage() {
    let [first, second] = <[TcpListener; 2]>::try_from(same_port(2).await).unwrap();
    let (a, accepted_a) = closing_backend(first);
    let (b, accepted_b) = closing_backend(second);
    let options = Options {
        retry_budget: BudgetConfig {
            ratio: 0.2,
            min_per_second: 0,
            window: Duration::from_secs(60),
        },
        ..Options::default()
    };
    let catalog = routes(1, vec![Service::new("down", &[a, b]).retries(3)]);
    let proxy = proxy(a, catalog).options(options).start().await;
    let client = http1_client();
    for _ in 0..10 {
        let (status, _) = call(&client, get(&proxy.url("/"))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let attempts = accepted_a.load(Ordering::SeqCst) + accepted_b.load(Ordering::SeqCst);
    // Request k may retry while retries < 0.2 k: the 1st and the 6th do, once each.
    assert_eq!(attempts, 12);
}

/// Bytes that look like HTTP but are not, and a head over `max_header_bytes`, get 400 and 431
/// from the proxy; the listener keeps serving.
#[tokio::test]
async fn malformed_and_oversized_requests_get_clean_errors_and_the_listener_keeps_serving() {
    let (_release, released) = watch::channel(true);
    let (app, backend) = named_backend(bind().await, "app", released);
    let proxy = proxy(app, routes(1, vec![Service::new("web", &[app])]))
        .start()
        .await;

    let response = raw_exchange(
        proxy.address,
        b"GET / HTTP/1.1\r\nthis is not a header\r\n\r\n",
        b"\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    let mut oversized = b"GET / HTTP/1.1\r\nHost: web\r\nX-Big: ".to_vec();
    oversized.resize(oversized.len() + 32 * 1024, b'x');
    oversized.extend_from_slice(b"\r\n\r\n");
    let response = raw_exchange(proxy.address, &oversized, b"\r\n\r\n").await;
    assert!(
        response.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&response)
    );

    // Binary garbage is not HTTP: it is passed to the destination as TCP, whose HTTP server
    // refuses it; the exchange ends either way.
    raw_exchange(
        proxy.address,
        b"\x00\x01\x02\xff\xfe garbage \x7f\r\n\r\n",
        b"",
    )
    .await;

    assert_eq!(backend.hits(), 0);
    let (status, body) = call(&http1_client(), get(&proxy.url("/"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app 0"));
}

/// Hop-by-hop headers, and those `Connection` names, stop at the proxy; end-to-end headers
/// arrive.
#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let app = header_names_backend(bind().await);
    let proxy = proxy(app, routes(1, vec![])).start().await;
    let request = Request::get(proxy.url("/"))
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-end-to-end", "1")
        .body(Body::default())
        .unwrap();
    let (status, seen) = call(&http1_client(), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen, "host,x-end-to-end");
}

/// A backend answering with the names of the headers it received.
fn header_names_backend(listener: TcpListener) -> std::net::SocketAddr {
    http_backend(
        listener,
        |request: Request<hyper::body::Incoming>| async move {
            let mut seen: Vec<String> = request.headers().keys().map(|k| k.to_string()).collect();
            seen.sort();
            text(StatusCode::OK, seen.join(","))
        },
    )
}

/// On a port the catalog declares HTTP, a client that connects and only later sends its
/// request (longer than the 100 ms after which an undeclared port would be TCP) is still
/// proxied as HTTP: its hop-by-hop header does not reach the application.
#[tokio::test]
async fn a_late_http_client_on_a_declared_http_port_is_still_proxied_as_http() {
    let app = header_names_backend(bind().await);
    let service = Service::new("web", &[app]).protocol(netting_discovery_client::Protocol::Http);
    let proxy = proxy(app, routes(1, vec![service])).start().await;
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within("response", async {
        let mut buffer = [0u8; 1024];
        while !response.ends_with(b"host") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&response));
            response.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(response.starts_with(b"HTTP/1.1 200"));
}

/// A WebSocket-style upgrade becomes a tunnel once the upstream answers 101.
#[tokio::test]
async fn an_http1_upgrade_is_tunnelled() {
    let app = http_backend(
        bind().await,
        |mut request: Request<hyper::body::Incoming>| async move {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buffer = [0u8; 64];
                while let Ok(n) = io.read(&mut buffer).await {
                    if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            response
                .headers_mut()
                .insert("upgrade", "echo".parse().unwrap());
            response
        },
    );
    let proxy = proxy(app, routes(1, vec![Service::new("ws", &[app])]))
        .start()
        .await;
    let mut stream = TcpStream::connect(proxy.address).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    within("101", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    within("echo", stream.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(&echoed, b"ping");
}

/// Inbound, requests go to the application on loopback, at the port they were sent to.
#[tokio::test]
async fn inbound_requests_go_to_the_application_on_loopback() {
    let (_release, released) = watch::channel(true);
    let (app, backend) = named_backend(bind().await, "app", released);
    // The pod's address as the caller saw it; only the port matters inbound.
    let pod_address = std::net::SocketAddr::from(([10, 255, 0, 1], app.port()));
    let proxy = proxy(pod_address, routes(1, vec![]))
        .inbound()
        .start()
        .await;
    let (status, body) = call(&http1_client(), get(&proxy.url("/"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app 0"));
    assert_eq!(backend.hits(), 1);
}
