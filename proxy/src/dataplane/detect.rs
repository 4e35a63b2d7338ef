//! Protocol detection: the first bytes a client sends say whether it speaks HTTP/1, HTTP/2
//! with prior knowledge, or something else.
//!
//! The bytes are *read* into a buffer that is then replayed in front of the connection
//! ([`super::io::ClientIo`]) rather than peeked with `MSG_PEEK`: a peek cannot wait for more
//! bytes than are already queued without spinning, and a request line may arrive in pieces.
//!
//! The rules, in order:
//! - the 24-byte HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`): HTTP/2;
//! - a known method, a space, and a request line ending in ` HTTP/1.0` or ` HTTP/1.1`: HTTP/1
//!   (a line still unfinished after `line_limit` bytes is HTTP/1 too, so that hyper answers
//!   it with 431/414 instead of it passing through);
//! - anything else: TCP. So is silence: a client of a server-speaks-first protocol (SMTP,
//!   MySQL, SSH...) sends nothing until it hears the server, so after
//!   [`DetectConfig::first_byte_wait`] without a byte the connection is proxied as TCP and
//!   the server's greeting reaches it that much later. (For a port the catalog declares
//!   HTTP or gRPC the caller stretches that wait to the whole timeout.) A client that starts but does not
//!   finish its first line within [`DetectConfig::timeout`] is proxied as TCP as well.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    Http2,
    Tcp,
}

impl Detected {
    /// The `protocol` label of connection metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tcp => "tcp",
        }
    }
}

/// How long detection may wait for a client's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectConfig {
    /// Silence this long from a new client means a server-speaks-first protocol: TCP.
    pub first_byte_wait: Duration,
    /// A first line not complete within this long is proxied as TCP.
    pub timeout: Duration,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            first_byte_wait: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113, 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Methods that start an HTTP/1 request we proxy per request; other methods (WebDAV's, custom
/// ones) still work, as opaque TCP.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// Classifies a connection from its first bytes; `None` while they cannot tell yet.
pub(crate) fn classify(prefix: &[u8], line_limit: usize) -> Option<Detected> {
    if prefix.is_empty() {
        return None;
    }
    let compared = prefix.len().min(H2_PREFACE.len());
    if prefix[..compared] == H2_PREFACE[..compared] {
        return (compared == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    let Some(method) = METHODS.iter().find(|method| prefix.starts_with(method)) else {
        let may_become_method = METHODS.iter().any(|method| method.starts_with(prefix));
        return if may_become_method {
            None
        } else {
            Some(Detected::Tcp)
        };
    };
    let rest = &prefix[method.len()..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &rest[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let http1 = line.len() > b" HTTP/1.1".len()
                && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"));
            Some(if http1 {
                Detected::Http1
            } else {
                Detected::Tcp
            })
        }
        None if prefix.len() >= line_limit => Some(Detected::Http1),
        None => None,
    }
}

/// Reads from `io` until its protocol is known; returns it with the bytes read, which the
/// caller must replay.
pub(crate) async fn detect<R>(
    io: &mut R,
    config: DetectConfig,
    line_limit: usize,
) -> io::Result<(Detected, BytesMut)>
where
    R: AsyncRead + Unpin,
{
    const CHUNK: usize = 2048;
    let started = Instant::now();
    let mut buffer = BytesMut::with_capacity(CHUNK);
    loop {
        let wait = if buffer.is_empty() {
            config.first_byte_wait
        } else {
            config.timeout
        };
        if buffer.len() == buffer.capacity() {
            buffer.reserve(CHUNK);
        }
        match tokio::time::timeout_at(started + wait, io.read_buf(&mut buffer)).await {
            // Silence, or a client that stopped half-way: opaque bytes.
            Err(_elapsed) => return Ok((Detected::Tcp, buffer)),
            // The client finished sending (perhaps a half-close): pass on what it sent.
            Ok(Ok(0)) => return Ok((Detected::Tcp, buffer)),
            Ok(Ok(_)) => {
                if let Some(found) = classify(&buffer, line_limit) {
                    return Ok((found, buffer));
                }
            }
            Ok(Err(error)) => return Err(error),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    const LIMIT: usize = 8192;

    fn classify_all(prefix: &[u8]) -> Option<Detected> {
        classify(prefix, LIMIT)
    }

    #[test]
    fn http1_request_lines_are_http1() {
        for line in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /submit?x=1 HTTP/1.0\r\n",
            b"DELETE http://example.com/a HTTP/1.1\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
        ] {
            assert_eq!(classify_all(line), Some(Detected::Http1), "{line:?}");
        }
    }

    #[test]
    fn the_h2_preface_is_http2_and_its_beginning_needs_more() {
        assert_eq!(classify_all(H2_PREFACE), Some(Detected::Http2));
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify_all(&with_frames), Some(Detected::Http2));
        assert_eq!(classify_all(b"PRI * HTTP/2.0\r\n"), None);
        // The preface's beginning is also a method's; it is decided when the bytes differ.
        assert_eq!(classify_all(b"P"), None);
        assert_eq!(classify_all(b"PU"), None);
        assert_eq!(
            classify_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Detected::Tcp)
        );
    }

    #[test]
    fn partial_input_waits_for_more() {
        for prefix in [
            &b"G"[..],
            b"GE",
            b"GET",
            b"GET ",
            b"GET /index.html HTTP/1.",
            b"DELE",
        ] {
            assert_eq!(classify_all(prefix), None, "{prefix:?}");
        }
        assert_eq!(classify_all(b""), None);
    }

    #[test]
    fn other_protocols_are_tcp_at_once() {
        for prefix in [
            &b"\x16\x03\x01\x02\x00"[..],     // TLS client hello
            b"*2\r\n$3\r\nGET\r\n",           // Redis (RESP)
            b"\x00\x00\x00\x08\x04\xd2\x16/", // PostgreSQL SSL request
            b"hello proxy\n",
            b"GETX / HTTP/1.1\r\n",
            b"get / HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ] {
            assert_eq!(classify_all(prefix), Some(Detected::Tcp), "{prefix:?}");
        }
    }

    #[test]
    fn a_method_without_an_http_version_is_tcp() {
        // Redis's inline commands look like HTTP methods but end without a version.
        assert_eq!(classify_all(b"GET key\r\n"), Some(Detected::Tcp));
        assert_eq!(classify_all(b"GET / HTTP/2.0\r\n"), Some(Detected::Tcp));
        assert_eq!(classify_all(b"PUT  HTTP/1.1"), None);
    }

    #[test]
    fn an_overlong_request_line_is_left_to_hyper() {
        let mut line = b"GET /".to_vec();
        line.resize(100, b'a');
        assert_eq!(classify(&line, 200), None);
        assert_eq!(classify(&line, 100), Some(Detected::Http1));
    }

    /// Real time, short waits: timeouts never fire early, so the assertions do not depend on
    /// the machine's speed (a paused clock would need tokio's `test-util` feature, which
    /// would rebuild tokio for this crate's tests alone).
    fn quick() -> DetectConfig {
        DetectConfig {
            first_byte_wait: Duration::from_millis(50),
            timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn silence_means_tcp_after_the_first_byte_wait() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let started = Instant::now();
        let (found, bytes) = detect(&mut server, quick(), LIMIT).await.unwrap();
        assert_eq!(found, Detected::Tcp);
        assert!(bytes.is_empty());
        assert!(started.elapsed() >= quick().first_byte_wait);
    }

    #[tokio::test]
    async fn a_request_line_in_pieces_is_http1_and_kept_whole() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let config = DetectConfig {
            timeout: Duration::from_secs(30),
            ..quick()
        };
        let writer = async move {
            client.write_all(b"GE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(b"T /a HTTP/1.1\r\n").await.unwrap();
            client
        };
        let (detected, _client) = tokio::join!(detect(&mut server, config, LIMIT), writer);
        let (found, bytes) = detected.unwrap();
        assert_eq!(found, Detected::Http1);
        assert_eq!(&bytes[..], b"GET /a HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_stalled_or_closed_client_is_tcp() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET /never-ends").await.unwrap();
        let (found, bytes) = detect(&mut server, quick(), LIMIT).await.unwrap();
        assert_eq!(
            (found, &bytes[..]),
            (Detected::Tcp, &b"GET /never-ends"[..])
        );
        drop(client);
        let (found, _) = detect(&mut server, quick(), LIMIT).await.unwrap();
        assert_eq!(found, Detected::Tcp);
    }
}
