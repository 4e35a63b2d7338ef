//! The network checks of the dev mode: is a port free before start-up, and what does a
//! replica's admin endpoint answer.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::ReplicaPlan;

/// A port a replica needs that cannot be bound now.
#[derive(Debug)]
pub(crate) struct PortUnavailable {
    pub(crate) addr: SocketAddr,
    /// e.g. `replica 1 gRPC`.
    pub(crate) role: String,
    pub(crate) source: io::Error,
}

impl fmt::Display for PortUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.source.kind() {
            io::ErrorKind::AddrInUse => "is already in use".to_owned(),
            io::ErrorKind::PermissionDenied => "needs privileges to bind".to_owned(),
            io::ErrorKind::AddrNotAvailable => "is not an address of this machine".to_owned(),
            _ => format!("cannot be bound: {}", self.source),
        };
        write!(
            f,
            "port {} ({}, {}) {why}",
            self.addr.port(),
            self.role,
            self.addr
        )
    }
}

impl std::error::Error for PortUnavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Binds and drops every port of `replicas`, naming the first one that is not free. A race
/// with another program remains possible; a replica that then fails to bind exits, and the
/// supervisor reports it with its log.
pub(crate) fn check_ports(replicas: &[ReplicaPlan]) -> Result<(), PortUnavailable> {
    for r in replicas {
        for (addr, kind) in [(r.grpc_listen, "gRPC"), (r.admin_listen, "admin")] {
            TcpListener::bind(addr).map_err(|source| PortUnavailable {
                addr,
                role: format!("replica {} {kind}", r.node_id),
                source,
            })?;
        }
    }
    Ok(())
}

/// Why a probe did not get a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeError {
    Io(String),
    TimedOut,
    Malformed,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Io(err) => f.write_str(err),
            ProbeError::TimedOut => f.write_str("no answer in time"),
            ProbeError::Malformed => f.write_str("not an HTTP response"),
        }
    }
}

/// `GET path` on `addr` over a fresh connection; returns the status code. Only the status
/// line is read, which is all a health check needs.
pub(crate) async fn http_status(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: netting-control-dev\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(128);
        let mut buf = [0u8; 256];
        // The status line is short; 1 KiB without a line end is not an HTTP server.
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(head)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(ProbeError::TimedOut),
        Ok(Err(err)) => Err(ProbeError::Io(err.to_string())),
        Ok(Ok(head)) => parse_status_line(&head).ok_or(ProbeError::Malformed),
    }
}

/// The status code of a response's first line, `HTTP/1.x NNN reason`.
pub(crate) fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}
