//! HTTP/1 protocol upgrades (WebSocket and the like) and `CONNECT`: the request is forwarded
//! on a connection of its own, and once the upstream agrees (`101 Switching Protocols`, or
//! `2xx` to `CONNECT`) both connections become a plain TCP tunnel, bytes copied both ways
//! until either side closes. If the upstream declines, its answer goes back as a normal
//! response. Such requests are never retried, and the request timeout ends with the
//! upstream's answer: a tunnel may stay open as long as its ends want.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::UPGRADE;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::connect::connect;
use super::error::ProxyError;
use super::headers::{connection_has, strip_hop_by_hop};
use super::http_conn::HttpConn;
use super::request_target::origin_form;
use super::target::Target;

/// Whether `request` asks to leave HTTP on this connection.
pub(crate) fn requested(request: &Request<Incoming>) -> bool {
    request.method() == Method::CONNECT
        || (request.headers().contains_key(UPGRADE) && connection_has(request.headers(), "upgrade"))
}

pub(crate) async fn tunnel(
    conn: &Arc<HttpConn>,
    target: &Target<'_>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let timeout = target.request_timeout(&conn.shared.plane.settings);
    match tokio::time::timeout(timeout, open(conn, target, request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.answer(conn.direction),
        Err(_elapsed) => ProxyError::Timeout.answer(conn.direction),
    }
}

async fn open(
    conn: &Arc<HttpConn>,
    target: &Target<'_>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = &*conn.shared;
    let is_connect = request.method() == Method::CONNECT;
    // Taken before the request is moved on: it resolves to the client's connection once
    // hyper has sent our 101/2xx answer.
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, !is_connect);
    if !is_connect {
        origin_form(&mut parts);
    }
    let endpoint = target
        .choose(&shared.plane.balancer, &[])
        .ok_or(ProxyError::NoEndpoint)?;
    let in_flight = target
        .is_balanced()
        .then(|| shared.plane.balancer.start(endpoint));
    let stream = connect(endpoint, shared.plane.settings.connect_timeout).await?;
    let (mut sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::upstream(endpoint, source))?;
    shared.signals.spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%endpoint, %error, "upstream upgrade connection failed");
        }
    });
    let request = Request::from_parts(parts, ProxyBody::Incoming(body));
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|source| ProxyError::upstream(endpoint, source))?;
    if let Some(in_flight) = in_flight {
        in_flight.succeeded();
    }
    let switched = if is_connect {
        response.status().is_success()
    } else {
        response.status() == StatusCode::SWITCHING_PROTOCOLS
    };
    strip_hop_by_hop(response.headers_mut(), switched && !is_connect);
    if switched {
        let upstream_side = hyper::upgrade::on(&mut response);
        // The tunnel keeps the client connection's context: it stays counted as open, and
        // draining waits for it.
        let conn = Arc::clone(conn);
        shared.signals.spawn(async move {
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(%endpoint, %error, "tunnel ended with an error");
                    }
                }
                Err(error) => tracing::debug!(%endpoint, %error, "upgrade did not complete"),
            }
            drop(conn);
        });
    }
    Ok(response.map(ProxyBody::Incoming))
}
