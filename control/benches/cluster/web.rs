//! A small HTTP/1.1 client for etcd's JSON gateway and both systems' /metrics pages.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub(crate) type Http = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `request`; a non-2xx status is an error carrying the body.
async fn send(http: &Http, request: http::Request<Full<Bytes>>) -> Result<Bytes, String> {
    let response = http.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(bytes)
}

/// POSTs `body` as JSON and parses the JSON answer.
pub(crate) async fn post_json(http: &Http, uri: &str, body: Bytes) -> Result<Value, String> {
    let request = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let bytes = send(http, request).await?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

pub(crate) async fn get(http: &Http, uri: &str) -> Result<Bytes, String> {
    let request = http::Request::get(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(http, request).await
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub(crate) fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// The sum over `pages` (one per member) of the counter `name`; `None` when a page lacks it.
pub(crate) async fn metric_sum(http: &Http, pages: &[String], name: &str) -> Option<f64> {
    let mut total = 0.0;
    for uri in pages {
        let bytes = get(http, uri).await.ok()?;
        total += metric(&String::from_utf8_lossy(&bytes), name)?;
    }
    Some(total)
}
