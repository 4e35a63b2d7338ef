//! Clients: an application in a pod calling another service, and the test reading a proxy's
//! admin port from the host. Every step has a deadline, so a hung proxy fails the test with a
//! message instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::apps::Served;

/// Longest a single request or exchange may take: far above what a loaded 2-core machine
/// needs, far below the test's own timeout.
pub(crate) const STEP: Duration = Duration::from_secs(15);

/// One HTTP response as an application sees it.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

impl Reply {
    /// Who served, from a test application's body; `None` for any other body.
    pub(crate) fn served(&self) -> Option<Served> {
        Served::parse(&self.body)
    }
}

/// Connects `socket` (created in the caller's namespace) to `to`.
pub(crate) async fn connect(socket: TcpSocket, to: SocketAddr) -> anyhow::Result<TcpStream> {
    timeout(STEP, socket.connect(to))
        .await
        .map_err(|_| anyhow!("connecting to {to} took longer than {STEP:?}"))?
        .with_context(|| format!("connecting to {to}"))
}

/// `GET path` over a new HTTP/1.1 connection from `socket` to `to`, as a plain application
/// would send it: to the address it was given, unaware of any proxy.
pub(crate) async fn http_get(
    socket: TcpSocket,
    to: SocketAddr,
    path: &str,
) -> anyhow::Result<Reply> {
    let stream = connect(socket, to).await?;
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
        let driver = tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, to.to_string())
            .body(Empty::new())
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending the request")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the body")?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok::<_, anyhow::Error>(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    timeout(STEP, exchange)
        .await
        .map_err(|_| anyhow!("GET {to}{path} took longer than {STEP:?}"))?
        .with_context(|| format!("GET http://{to}{path}"))
}

/// `n` sequential `GET path`s on one HTTP/1.1 keep-alive connection from `socket` to `to`.
pub(crate) async fn http_get_sequence(
    socket: TcpSocket,
    to: SocketAddr,
    path: &str,
    n: usize,
) -> anyhow::Result<Vec<Reply>> {
    let stream = connect(socket, to).await?;
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
        let driver = tokio::spawn(connection);
        let mut replies = Vec::with_capacity(n);
        for i in 0..n {
            sender
                .ready()
                .await
                .with_context(|| format!("the connection closed before request {i}"))?;
            let request = Request::get(path)
                .header(header::HOST, to.to_string())
                .body(Empty::new())
                .context("building the request")?;
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("sending request {i}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .with_context(|| format!("reading body {i}"))?
                .to_bytes();
            replies.push(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        drop(sender);
        driver.abort();
        Ok::<_, anyhow::Error>(replies)
    };
    timeout(STEP, exchange)
        .await
        .map_err(|_| anyhow!("{n} GETs to {to}{path} took longer than {STEP:?}"))?
        .with_context(|| format!("GET http://{to}{path} x{n} on one connection"))
}

/// What a banner-echo exchange saw.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    /// The line the server sent before the client said anything.
    pub(crate) banner: String,
    /// What came back for `payload`, up to the server's close.
    pub(crate) echoed: Vec<u8>,
}

/// Connects, reads the server's banner line before sending anything, sends `payload`, closes
/// the sending side and reads everything until the server closes.
pub(crate) async fn banner_echo(
    socket: TcpSocket,
    to: SocketAddr,
    payload: &[u8],
) -> anyhow::Result<Exchange> {
    let stream = connect(socket, to).await?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut banner = String::new();
        read.read_line(&mut banner)
            .await
            .context("reading the banner")?;
        if !banner.ends_with('\n') {
            bail!("the connection closed before a whole banner line came: {banner:?}");
        }
        // Write and read at once: a payload larger than the socket buffers would otherwise
        // deadlock against the echo.
        let send = async {
            write.write_all(payload).await?;
            write.shutdown().await
        };
        let mut echoed = Vec::with_capacity(payload.len());
        let receive = read.read_to_end(&mut echoed);
        let (sent, received) = tokio::join!(send, receive);
        sent.context("sending the payload")?;
        received.context("reading the echo")?;
        Ok(Exchange {
            banner: banner.trim_end().to_owned(),
            echoed,
        })
    };
    timeout(STEP, exchange)
        .await
        .map_err(|_| anyhow!("the exchange with {to} took longer than {STEP:?}"))?
        .with_context(|| format!("banner and echo with {to}"))
}

/// A plain `GET` from the host (root namespace) to an admin endpoint: status and body.
pub(crate) async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    let socket = TcpSocket::new_v4().context("socket")?;
    http_get(socket, addr, path).await
}
