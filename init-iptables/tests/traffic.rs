//! Real connections through the rules: a "pod" namespace and a "peer" namespace joined by a
//! veth pair, listeners standing in for the proxy, the application and remote services, and
//! netting-init applied in the pod. Each connection must land on the listener the rules say.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use netting_init::Backend;
use support::{Netns, can_run, namespace, stderr};

const POD_IP: &str = "10.77.0.2";
const PEER_IP: &str = "10.77.0.1";
const PROXY_UID: u32 = 1337;

/// Listeners by port, non-blocking.
struct Listeners(Vec<(u16, TcpListener)>);

impl Listeners {
    fn open(ns: &Netns, ports: &'static [u16]) -> Self {
        Self(ns.within(move || {
            ports
                .iter()
                .map(|&p| {
                    let l = TcpListener::bind(("0.0.0.0", p)).unwrap();
                    l.set_nonblocking(true).unwrap();
                    (p, l)
                })
                .collect()
        }))
    }

    /// The port whose listener accepts the next connection (within a few seconds).
    fn accepted(&self) -> Option<u16> {
        self.accepted_within(Duration::from_secs(3))
    }

    /// Checks that no connection is waiting. Called right after another listener accepted
    /// the connection under test, so a stray one would already be queued: a short look is
    /// enough.
    fn none_waiting(&self) -> bool {
        self.accepted_within(Duration::from_millis(100)).is_none()
    }

    fn accepted_within(&self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            for (port, listener) in &self.0 {
                if listener.accept().is_ok() {
                    return Some(*port);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// Connects from inside `ns` as root; the stream is returned so the connection stays open.
fn connect(ns: &Netns, to: &str) -> TcpStream {
    let addr: SocketAddr = to.parse().unwrap();
    ns.within(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"))
}

/// Connects from inside `ns` as the proxy's UID (bash's /dev/tcp in a child process).
fn connect_as_proxy(ns: &Netns, ip: &str, port: u16) {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
    let out = ns.within(move || {
        Command::new("bash")
            .args(["-c", &script])
            .uid(PROXY_UID)
            .gid(PROXY_UID)
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "as the proxy: {}", stderr(&out));
}

fn check_traffic(backend: Backend) {
    if !can_run(
        support::which("bash")
            .is_none()
            .then(|| "bash is missing".to_owned()),
    ) {
        return;
    }
    let (Some(pod), Some(peer)) = (namespace(backend), namespace(backend)) else {
        return;
    };
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ]);
    for (ns, ip) in [(&pod, POD_IP), (&peer, PEER_IP)] {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }

    // In the pod: the proxy's outbound and inbound listeners, the app, the admin port.
    let in_pod = Listeners::open(&pod, &[15001, 15006, 8080, 15020]);
    // Outside: a remote service and an excluded port.
    let outside = Listeners::open(&peer, &[80, 22]);

    let flag = format!("--backend={}", backend.name());
    let args = [
        "--proxy-uid",
        "1337",
        "--exclude-inbound-ports",
        "15020",
        "--exclude-outbound-ports",
        "22",
        &flag,
    ];
    pod.init_ok(&args);

    let pod_addr = |port: u16| format!("{POD_IP}:{port}");
    let peer_addr = |port: u16| format!("{PEER_IP}:{port}");

    let _c = connect(&peer, &pod_addr(8080));
    assert_eq!(
        in_pod.accepted(),
        Some(15006),
        "inbound to the app goes to the proxy"
    );

    let _c = connect(&peer, &pod_addr(15020));
    assert_eq!(
        in_pod.accepted(),
        Some(15020),
        "an excluded inbound port is not redirected"
    );

    let _c = connect(&pod, &peer_addr(80));
    assert_eq!(
        in_pod.accepted(),
        Some(15001),
        "the app's outbound goes to the proxy"
    );
    assert!(outside.none_waiting());

    connect_as_proxy(&pod, PEER_IP, 80);
    assert_eq!(
        outside.accepted(),
        Some(80),
        "the proxy's own connections go out directly"
    );
    assert!(in_pod.none_waiting());

    let _c = connect(&pod, &peer_addr(22));
    assert_eq!(
        outside.accepted(),
        Some(22),
        "an excluded outbound port is not redirected"
    );

    let _c = connect(&pod, "127.0.0.1:8080");
    assert_eq!(in_pod.accepted(), Some(8080), "loopback is not redirected");

    let _c = connect(&pod, &pod_addr(8080));
    assert_eq!(
        in_pod.accepted(),
        Some(15001),
        "the app calling its own pod IP goes through the proxy"
    );

    pod.init_ok(&["--cleanup", &flag]);
    let _c = connect(&pod, &peer_addr(80));
    assert_eq!(
        outside.accepted(),
        Some(80),
        "after cleanup nothing is redirected"
    );
    let _c = connect(&peer, &pod_addr(8080));
    assert_eq!(
        in_pod.accepted(),
        Some(8080),
        "after cleanup nothing is redirected"
    );
}

/// Connections follow the rules, with iptables-nft: inbound to the inbound port, outbound to
/// the outbound port, except the proxy's UID, excluded ports and loopback; cleanup restores
/// direct connections.
#[test]
fn traffic_follows_the_rules_nft() {
    check_traffic(Backend::Nft);
}

/// As [`traffic_follows_the_rules_nft`], with iptables-legacy.
#[test]
fn traffic_follows_the_rules_legacy() {
    check_traffic(Backend::Legacy);
}
