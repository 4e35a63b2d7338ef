//! The request target a request goes out with: origin form for HTTP/1 (`/path?query`, the
//! authority in `Host`), absolute form for HTTP/2 (`:scheme` and `:authority`).

use std::net::SocketAddr;

use http::Uri;
use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};

/// HTTP/1 to an origin server: `/path?query`, with `Host` carrying the authority. A client
/// that used the absolute form (as to a forward proxy) keeps its authority in `Host`.
pub(crate) fn origin_form(parts: &mut Parts) {
    let Some(authority) = parts.uri.authority() else {
        return;
    };
    if !parts.headers.contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(uri) {
        parts.uri = uri;
    }
}

/// HTTP/2 needs `:scheme` and `:authority`; hyper's server fills them from the client's
/// request, so this only completes a request that lacked them.
pub(crate) fn absolute_form(parts: &mut Parts, destination: SocketAddr) {
    if parts.uri.scheme().is_some() && parts.uri.authority().is_some() {
        return;
    }
    let mut uri = parts.uri.clone().into_parts();
    if uri.scheme.is_none() {
        uri.scheme = Some(Scheme::HTTP);
    }
    if uri.authority.is_none() {
        uri.authority = Authority::try_from(destination.to_string()).ok();
    }
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(uri) {
        parts.uri = uri;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::Request;

    use super::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn http1_requests_go_out_in_origin_form_with_their_host() {
        let mut absolute = parts("http://shop.example:8080/cart?id=3", None);
        origin_form(&mut absolute);
        assert_eq!(absolute.uri, "/cart?id=3");
        assert_eq!(absolute.headers[HOST], "shop.example:8080");

        let mut with_host = parts("http://ignored/x", Some("kept"));
        origin_form(&mut with_host);
        assert_eq!(with_host.uri, "/x");
        assert_eq!(with_host.headers[HOST], "kept");

        let mut origin = parts("/already", Some("a"));
        origin_form(&mut origin);
        assert_eq!(origin.uri, "/already");
    }

    #[test]
    fn http2_requests_always_have_scheme_and_authority() {
        let destination: SocketAddr = "10.0.0.1:50051".parse().unwrap();
        let mut bare = parts("/pkg.Service/Method", None);
        absolute_form(&mut bare, destination);
        assert_eq!(bare.uri, "http://10.0.0.1:50051/pkg.Service/Method");
        let mut full = parts("http://api.shop:50051/pkg.Service/Method", None);
        absolute_form(&mut full, destination);
        assert_eq!(full.uri, "http://api.shop:50051/pkg.Service/Method");
    }
}
