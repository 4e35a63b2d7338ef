//! Minimal configs for the proxies netting-proxy is compared with: plain HTTP reverse proxies
//! to one backend, keep-alive on both sides, no logging, thread/worker counts left at their
//! defaults (one per CPU, as netting-proxy's runtime).

use std::net::SocketAddr;
use std::path::Path;

/// haproxy: one frontend, one server, server connections reused by any client.
pub(crate) fn haproxy(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "global
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always

frontend bench
    bind {listen}
    default_backend app

backend app
    server app1 {backend}
"
    )
}

/// nginx: one server block, an upstream with an idle keep-alive pool (HTTP/1.1 and an empty
/// `Connection` header, which nginx needs to keep upstream connections open). Everything it
/// writes goes under `dir`.
pub(crate) fn nginx(listen: SocketAddr, backend: SocketAddr, dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes auto;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    # The default (1000) closes client connections every 1000 requests; the others do not.
    keepalive_requests 1000000;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;

    upstream app {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}

    server {{
        listen {listen};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    )
}
