//! The sidecar end to end, as root, in network namespaces: a control-plane replica and three
//! pods (a caller `a`, and `b1`, `b2` serving the same services), each pod with its
//! applications, netting-init's rules and a netting-proxy running as uid 1337. The
//! applications know nothing of the mesh: they dial an endpoint address from the catalog.
//! See `support/mesh/lab.rs` for the layout and the catalog.
//!
//! Each test prints why and returns early when it cannot run here (not root, tools missing),
//! and fails instead when `NETTING_REQUIRE_TOOLS=1`. Each builds its own lab (named after the
//! process and a letter of its own) and removes it, also when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mesh/mod.rs"]
mod mesh;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures::StreamExt;
use http::StatusCode;
use mesh::apps::Served;
use mesh::binaries::binaries;
use mesh::client;
use mesh::lab::{ECHO_PORT, EXCLUDED_PORT, HTTP_PORT, MeshLab, Pod, init_args, network, service};
use mesh::rules::Normalised;

const REQUESTS: &str = "netting_proxy_requests_total";
const CONNECTIONS: &str = "netting_proxy_connections_total";
const BYTES: &str = "netting_proxy_bytes_total";

/// The HTTP service the pods call, as the proxy's metrics label it.
const SERVICE_B: &str = "shop/b";

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `n` GETs from an application of `from` to `to`, `concurrency` at a time, each on its own
/// connection; every one must succeed with a test application's body. Returns who served.
async fn calls(
    lab: &MeshLab,
    from: Pod,
    to: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Vec<Served> {
    let replies: Vec<_> = futures::stream::iter(0..n)
        .map(|i| async move { (i, lab.get(from, to, "/who").await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    replies
        .into_iter()
        .map(|(i, reply)| {
            let reply = reply
                .unwrap_or_else(|e| panic!("call {i} from pod {} to {to}: {e:#}", from.name()));
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "call {i} to {to}: {}",
                reply.body
            );
            reply.served().unwrap_or_else(|| {
                panic!(
                    "call {i} to {to}: not an application's answer: {:?}",
                    reply.body
                )
            })
        })
        .collect()
}

/// How many calls each pod served.
fn by_pod(served: &[Served]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in served {
        *counts.entry(s.pod.clone()).or_default() += 1;
    }
    counts
}

/// A's application calls service b by b1's address: every request goes through A's outbound
/// proxy, which balances them over b's two endpoints (both b1 and b2 answer, nobody else), and
/// enters the callee's inbound proxy before its application (which therefore sees the
/// connection come from loopback, not from pod a). A's proxy counts every request as outbound
/// to `shop/b`, and each callee's proxy counts as inbound exactly the requests its pod served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_balanced_over_the_service_and_pass_both_proxies() {
    let Some(lab) = MeshLab::start(
        "calls_are_balanced_over_the_service_and_pass_both_proxies",
        'a',
    )
    .await
    else {
        return;
    };
    const N: usize = 40;
    let served = calls(&lab, Pod::A, lab.addr(Pod::B1, HTTP_PORT), N, 8).await;
    let counts = by_pod(&served);
    assert!(
        counts.get("b1").copied().unwrap_or(0) > 0 && counts.get("b2").copied().unwrap_or(0) > 0,
        "both endpoints of shop/b must serve; served by {counts:?}"
    );
    assert_eq!(
        counts.len(),
        2,
        "only b1 and b2 serve shop/b; served by {counts:?}"
    );
    for s in &served {
        assert_eq!(
            s.peer.ip(),
            LOOPBACK,
            "pod {} saw the request come from {}: it did not pass that pod's inbound proxy",
            s.pod,
            s.peer
        );
    }

    let outbound = [("direction", "outbound"), ("service", SERVICE_B)];
    let target = N as f64;
    let scrape = lab
        .wait_for("pod a's proxy to count the requests to shop/b", || async {
            let scrape = lab.scrape(Pod::A).await;
            (scrape.sum(REQUESTS, &outbound) >= target).then_some(scrape)
        })
        .await;
    assert_eq!(
        scrape.sum(REQUESTS, &outbound),
        target,
        "{}",
        scrape.describe(REQUESTS)
    );
    assert_eq!(
        scrape.sum(
            REQUESTS,
            &[
                ("direction", "outbound"),
                ("service", SERVICE_B),
                ("status_class", "2xx")
            ]
        ),
        target,
        "{}",
        scrape.describe(REQUESTS)
    );

    for (pod, name) in [(Pod::B1, "b1"), (Pod::B2, "b2")] {
        let expected = counts[name] as f64;
        let scrape = lab
            .wait_for(
                &format!("pod {name}'s proxy to count its inbound requests"),
                || async {
                    let scrape = lab.scrape(pod).await;
                    (scrape.sum(REQUESTS, &[("direction", "inbound")]) >= expected)
                        .then_some(scrape)
                },
            )
            .await;
        assert_eq!(
            scrape.sum(REQUESTS, &[("direction", "inbound")]),
            expected,
            "pod {name} served {expected} requests; its proxy counts:\n{}",
            scrape.describe(REQUESTS)
        );
    }
}

/// HTTP is balanced per request, not per connection: sequential requests on one keep-alive
/// connection of pod a's application are spread over b1 and b2. (The second request already
/// goes to the other endpoint: the first one's measured latency, at least the applications'
/// 20 ms, makes its endpoint dearer than the untried one's 10 ms default estimate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_connection_are_balanced_one_by_one() {
    let Some(lab) = MeshLab::start("requests_on_one_connection_are_balanced_one_by_one", 'g').await
    else {
        return;
    };
    const N: usize = 10;
    let target = lab.addr(Pod::B1, HTTP_PORT);
    let replies = client::http_get_sequence(lab.socket(Pod::A), target, "/who", N)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let served: Vec<Served> = replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.served().expect("an application's answer")
        })
        .collect();
    let counts = by_pod(&served);
    assert!(
        counts.contains_key("b1") && counts.contains_key("b2") && counts.len() == 2,
        "{N} requests on one connection must reach both endpoints: {counts:?}"
    );
    let outbound = [("direction", "outbound"), ("service", SERVICE_B)];
    let counted = lab
        .wait_for("pod a's proxy to count the requests", || async {
            let count = lab.scrape(Pod::A).await.sum(REQUESTS, &outbound);
            (count >= N as f64).then_some(count)
        })
        .await;
    assert_eq!(counted, N as f64);
}

/// Once b2's endpoint is deregistered and pod a's proxy has the config without it, no request
/// reaches b2 any more, although b2 still runs and served before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistered_endpoint_gets_no_more_traffic() {
    let Some(lab) = MeshLab::start("a_deregistered_endpoint_gets_no_more_traffic", 'b').await
    else {
        return;
    };
    let target = lab.addr(Pod::B1, HTTP_PORT);
    let before = by_pod(&calls(&lab, Pod::A, target, 20, 4).await);
    assert!(
        before.contains_key("b2"),
        "b2 served nothing even before: {before:?}"
    );

    let version = lab.deregister("b", lab.addr(Pod::B2, HTTP_PORT)).await;
    lab.wait_for_endpoints(Pod::A, "b", &[lab.addr(Pod::B1, HTTP_PORT)], version)
        .await;

    let after = by_pod(&calls(&lab, Pod::A, target, 30, 6).await);
    assert_eq!(
        after,
        BTreeMap::from([("b1".to_owned(), 30)]),
        "after b2 left the catalog (version {version}) everything must go to b1"
    );
}

/// Killing the whole control plane (its only replica) does not stop traffic: pod a's proxy
/// notices it lost the control plane, keeps routing with its last config, and still balances
/// calls over both endpoints of shop/b, counting them as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_without_the_control_plane() {
    let Some(mut lab) = MeshLab::start("traffic_flows_without_the_control_plane", 'c').await else {
        return;
    };
    lab.kill_control_plane();
    lab.wait_for("pod a's proxy to see the control plane gone", || async {
        let config = lab.config(Pod::A).await?;
        (!config.pointer("/control_plane/connected")?.as_bool()?).then_some(())
    })
    .await;

    let outbound = [("direction", "outbound"), ("service", SERVICE_B)];
    let counted_before = lab.scrape(Pod::A).await.sum(REQUESTS, &outbound);
    const N: usize = 30;
    let counts = by_pod(&calls(&lab, Pod::A, lab.addr(Pod::B1, HTTP_PORT), N, 6).await);
    assert!(
        counts.contains_key("b1") && counts.contains_key("b2") && counts.len() == 2,
        "without a control plane shop/b must still be balanced over b1 and b2: {counts:?}"
    );
    let expected = counted_before + N as f64;
    let counted = lab
        .wait_for("pod a's proxy to count the requests", || async {
            let count = lab.scrape(Pod::A).await.sum(REQUESTS, &outbound);
            (count >= expected).then_some(count)
        })
        .await;
    assert_eq!(counted, expected);
}

/// A TCP protocol that is not HTTP and where the server speaks first (a banner, then an echo of
/// binary data) passes through both proxies unchanged: the banner arrives before the client
/// sends anything, every byte comes back, the callee saw the connection from its inbound proxy,
/// and pod a's proxy carried the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_tcp_passes_through() {
    let Some(lab) = MeshLab::start("non_http_tcp_passes_through", 'd').await else {
        return;
    };
    // Bytes no HTTP parser accepts: NULs, 0xff, no request line.
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(7) % 256) as u8)
        .collect();
    const CONNECTIONS_MADE: usize = 4;
    let target = lab.addr(Pod::B1, ECHO_PORT);
    let before = lab.scrape(Pod::A).await;
    for i in 0..CONNECTIONS_MADE {
        let exchange = client::banner_echo(lab.socket(Pod::A), target, &payload)
            .await
            .unwrap_or_else(|e| panic!("connection {i} to {target}: {e:#}"));
        let served = Served::parse(&exchange.banner).unwrap_or_else(|| {
            panic!(
                "connection {i}: not the application's banner: {:?}",
                exchange.banner
            )
        });
        assert!(["b1", "b2"].contains(&served.pod.as_str()), "{served:?}");
        assert_eq!(
            served.peer.ip(),
            LOOPBACK,
            "connection {i} did not pass the callee's inbound proxy"
        );
        assert_eq!(
            exchange.echoed.len(),
            payload.len(),
            "connection {i}: echo length"
        );
        assert!(
            exchange.echoed == payload,
            "connection {i}: the echo differs from what was sent"
        );
    }

    let up = [("direction", "outbound"), ("flow", "to_upstream")];
    let down = [("direction", "outbound"), ("flow", "to_client")];
    let sent = (CONNECTIONS_MADE * payload.len()) as f64;
    let (up_before, down_before) = (before.sum(BYTES, &up), before.sum(BYTES, &down));
    lab.wait_for("pod a's proxy to count the bytes it carried", || async {
        let scrape = lab.scrape(Pod::A).await;
        (scrape.sum(BYTES, &up) - up_before >= sent
            && scrape.sum(BYTES, &down) - down_before >= sent)
            .then_some(())
    })
    .await;
    let after = lab.scrape(Pod::A).await;
    assert!(
        after.sum(CONNECTIONS, &[("direction", "outbound")])
            - before.sum(CONNECTIONS, &[("direction", "outbound")])
            >= CONNECTIONS_MADE as f64,
        "{}",
        after.describe(CONNECTIONS)
    );
    assert_eq!(
        after.sum(REQUESTS, &[("service", &service("echo"))]),
        0.0,
        "a TCP service must not be counted as HTTP requests"
    );
}

/// A destination port given to `--exclude-outbound-ports` bypasses the proxy: calls to
/// `shop/direct` (in the catalog, balanced if the proxy saw them) reach exactly the endpoint
/// dialled, and pod a's proxy counts no connection for them — while one call through it right
/// after is counted, which shows the counter works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_ports_bypass_the_proxy() {
    let Some(lab) = MeshLab::start("excluded_ports_bypass_the_proxy", 'e').await else {
        return;
    };
    let outbound = [("direction", "outbound")];
    let before = lab.scrape(Pod::A).await.sum(CONNECTIONS, &outbound);

    const N: usize = 10;
    let counts = by_pod(&calls(&lab, Pod::A, lab.addr(Pod::B1, EXCLUDED_PORT), N, 5).await);
    assert_eq!(
        counts,
        BTreeMap::from([("b1".to_owned(), N)]),
        "calls to an excluded port must reach the address dialled, unbalanced"
    );

    // The control: one call that does go through the proxy.
    calls(&lab, Pod::A, lab.addr(Pod::B1, HTTP_PORT), 1, 1).await;
    let scrape = lab
        .wait_for("pod a's proxy to count the call through it", || async {
            let scrape = lab.scrape(Pod::A).await;
            (scrape.sum(CONNECTIONS, &outbound) > before).then_some(scrape)
        })
        .await;
    assert_eq!(
        scrape.sum(CONNECTIONS, &outbound),
        before + 1.0,
        "only the call to the non-excluded port may be counted:\n{}",
        scrape.describe(CONNECTIONS)
    );
    assert_eq!(
        scrape.sum(REQUESTS, &[("service", &service("direct"))]),
        0.0
    );
}

/// `netting-init --cleanup` leaves a pod's rules exactly as they were before `netting-init`
/// ran (both iptables back ends, normalised dumps), including rules somebody else had put
/// there; in between, netting-init's chains were really there.
#[test]
fn cleanup_restores_the_rules_from_before() {
    let test = "cleanup_restores_the_rules_from_before";
    let Some(network) = network(test, 'f', 1) else {
        return;
    };
    let binaries = binaries().unwrap_or_else(|e| panic!("{test}: {e:#}"));
    let tools = network.tools().clone();

    // A CNI's rules, say: a DNS redirect in nat, a filter rule, a chain of its own.
    let foreign = "*nat\n:CNI-DNS - [0:0]\n-A OUTPUT -p udp -m udp --dport 53 -j CNI-DNS\n\
                   -A CNI-DNS -p udp -j REDIRECT --to-ports 5353\nCOMMIT\n\
                   *filter\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    let mut restore = network.command_in(0, &tools.iptables_restore);
    restore.args(["--noflush", "--wait=10"]);
    run_with_input(restore, foreign);

    let saves = || -> Vec<(String, Normalised)> {
        ["iptables-nft-save", "iptables-legacy-save"]
            .into_iter()
            .filter_map(|tool| netting_chaos::lab::preflight::locate(tool).map(|path| (tool, path)))
            .map(|(tool, path)| {
                let output = network
                    .command_in(0, &path)
                    .output()
                    .expect("running iptables-save");
                assert!(
                    output.status.success(),
                    "{tool}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                (
                    tool.to_owned(),
                    Normalised::parse(&String::from_utf8_lossy(&output.stdout)),
                )
            })
            .collect()
    };
    let before = saves();
    assert!(
        before.iter().any(|(_, rules)| rules.mentions("CNI-DNS")),
        "the foreign rules were not applied: {before:?}"
    );

    let init = |args: &[String]| {
        let output = network
            .command_in(0, &binaries.init)
            .args(args)
            .output()
            .expect("running netting-init");
        assert!(
            output.status.success(),
            "netting-init {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    init(&init_args());
    let applied = saves();
    assert!(
        applied.iter().any(|(_, rules)| rules.mentions("NETTING_OUTPUT") && rules.mentions("NETTING_INBOUND")),
        "netting-init added no chains: {applied:?}"
    );

    init(&["--cleanup".to_owned()]);
    let after = saves();
    for ((tool, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(
            is, was,
            "{tool} after cleanup:\n{is}\nbefore netting-init:\n{was}"
        );
    }
}

fn run_with_input(mut command: std::process::Command, input: &str) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
