//! The pods' applications: tiny servers that say which pod served and whom they saw as the
//! peer. The peer tells the path: a connection that came through the pod's inbound proxy comes
//! from 127.0.0.1 (the proxy dials the application on loopback), one that bypassed it comes
//! from the caller's pod address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What an application reports about one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    /// The pod that served.
    pub(crate) pod: String,
    /// The address the application saw the connection come from.
    pub(crate) peer: SocketAddr,
}

impl Served {
    /// The application's own words: `pod=<name> peer=<addr>`.
    pub(crate) fn render(&self) -> String {
        format!("pod={} peer={}", self.pod, self.peer)
    }

    /// Parses [`Served::render`]'s text (surrounding words and whitespace allowed).
    pub(crate) fn parse(text: &str) -> Option<Served> {
        let mut pod = None;
        let mut peer = None;
        for word in text.split_whitespace() {
            if let Some(value) = word.strip_prefix("pod=") {
                pod = Some(value.to_owned());
            } else if let Some(value) = word.strip_prefix("peer=") {
                peer = value.parse().ok();
            }
        }
        Some(Served {
            pod: pod?,
            peer: peer?,
        })
    }
}

/// An HTTP server (HTTP/1.1 and h2c) that answers every request, after `delay`, with 200 and
/// the body `pod=<pod> peer=<peer>\n`.
pub(crate) fn serve_http(listener: TcpListener, pod: String, delay: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let pod = pod.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let body = format!(
                        "{}\n",
                        Served {
                            pod: pod.clone(),
                            peer
                        }
                        .render()
                    );
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A server-speaks-first TCP server: on accept it sends `banner pod=<pod> peer=<peer>\n`,
/// then echoes every byte until the client closes its side, then closes.
pub(crate) fn serve_banner_echo(listener: TcpListener, pod: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let banner = format!(
                "banner {}\n",
                Served {
                    pod: pod.clone(),
                    peer
                }
                .render()
            );
            tokio::spawn(async move {
                if stream.write_all(banner.as_bytes()).await.is_err() {
                    return;
                }
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}
