//! Hop-by-hop headers: they describe one connection, so a proxy removes them before
//! forwarding a message on another (RFC 9110, 7.6.1). hyper frames bodies itself on each side
//! (`Transfer-Encoding`, `Content-Length` of HTTP/2), and the HTTP/2 side refuses
//! connection-specific headers outright, which makes this necessary as well as polite.

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};

const KEEP_ALIVE: &str = "keep-alive";
const PROXY_CONNECTION: &str = "proxy-connection";

/// Removes the hop-by-hop headers of `headers`: `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE` unless it is
/// exactly `trailers` (which gRPC needs end to end). With `keep_upgrade`, for a protocol
/// upgrade being forwarded, `Upgrade` stays and `Connection` becomes just `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(CONNECTION) {
        // Names listed in `Connection` that are not removed below anyway; rare, so the
        // allocation is only made when one is met.
        let mut listed: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                let known = [
                    "close",
                    "keep-alive",
                    "upgrade",
                    "te",
                    "transfer-encoding",
                    PROXY_CONNECTION,
                ]
                .iter()
                .any(|k| token.eq_ignore_ascii_case(k));
                if !known && let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    listed.push(name);
                }
                if token.eq_ignore_ascii_case("te") {
                    // Named as a connection option, TE is hop-by-hop even when `trailers`.
                    listed.push(TE);
                }
            }
        }
        for name in listed {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION] {
        headers.remove(name);
    }
    headers.remove(TRANSFER_ENCODING);
    if keep_upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    let te_is_trailers = headers
        .get_all(TE)
        .iter()
        .all(|value| value.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_is_trailers {
        headers.remove(TE);
    }
}

/// Whether a `Connection` header lists `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|listed| listed.trim().eq_ignore_ascii_case(token))
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::header::{CONTENT_LENGTH, HOST};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<String> {
        let mut names: Vec<String> = map.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut map = headers(&[
            ("host", "a"),
            ("connection", "keep-alive, X-Trace-Hop"),
            ("connection", "close"),
            ("x-trace-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("content-length", "3"),
            ("x-end-to-end", "yes"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["content-length", "host", "x-end-to-end"]);
        assert_eq!(map[HOST], "a");
        assert_eq!(map[CONTENT_LENGTH], "3");
    }

    #[test]
    fn te_trailers_survives_unless_connection_names_it() {
        let mut map = headers(&[("te", "trailers"), ("content-type", "application/grpc")]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map[TE], "trailers");
        let mut map = headers(&[("te", "trailers"), ("connection", "TE")]);
        strip_hop_by_hop(&mut map, false);
        assert!(map.is_empty(), "{map:?}");
    }

    #[test]
    fn an_upgrade_being_forwarded_keeps_upgrade_and_a_minimal_connection() {
        let mut map = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(connection_has(&map, "upgrade"));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map[CONNECTION], "upgrade");
        assert_eq!(map[UPGRADE], "websocket");
        assert_eq!(map["sec-websocket-key"], "abc");
        assert!(!connection_has(
            &headers(&[("connection", "close")]),
            "upgrade"
        ));
    }

    #[test]
    fn nothing_to_strip_leaves_the_map_alone() {
        let mut map = headers(&[("host", "a"), ("accept", "*/*")]);
        let before = map.clone();
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map, before);
    }
}
