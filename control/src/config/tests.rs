#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn parse(args: &[&str]) -> Result<ReplicaConfig, String> {
    let mut argv = vec!["netting-control", "--data-dir", "/tmp/x"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    ReplicaConfig::try_from(cli.run).map_err(|e| e.to_string())
}

/// A peer list gives every member, this one included, and the lowest id bootstraps.
#[test]
fn peer_list() {
    let cfg = parse(&[
        "--node-id",
        "1",
        "--peer",
        "0=127.0.0.1:7100,1=127.0.0.1:7101",
        "--peer",
        "2=127.0.0.1:7102",
    ])
    .unwrap();
    assert_eq!(cfg.peers.len(), 3);
    assert_eq!(cfg.grpc_advertise, "127.0.0.1:7101");
    assert_eq!(cfg.bootstrapper(), 0);
    assert!(!cfg.is_bootstrapper());
    assert_eq!(
        cfg.other_peers().map(|(id, _)| id).collect::<Vec<_>>(),
        vec![0, 2]
    );
}

/// StatefulSet mode derives the id from the hostname and the peers from the naming pattern.
#[test]
fn statefulset_pattern() {
    let cfg = parse(&[
        "--statefulset",
        "netting",
        "--headless-service",
        "netting-peers",
        "--namespace",
        "mesh",
        "--replicas",
        "3",
        "--hostname",
        "netting-2",
        "--grpc-listen",
        "0.0.0.0:7100",
    ])
    .unwrap();
    assert_eq!(cfg.node_id, 2);
    assert_eq!(
        cfg.peers.get(&0).map(String::as_str),
        Some("netting-0.netting-peers.mesh.svc:7100")
    );
    assert_eq!(cfg.grpc_advertise, "netting-2.netting-peers.mesh.svc:7100");
}

/// Conflicting or malformed flags stop start-up naming the flag.
#[test]
fn bad_flags_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--peer", "0=127.0.0.1:7100"], "--node-id"),
        (&["--node-id", "0", "--peer", "zero=127.0.0.1:1"], "--peer"),
        (&["--node-id", "0", "--peer", "0=127.0.0.1:0"], "--peer"),
        (&["--node-id", "0", "--peer", "0=a:1,0=b:2"], "--peer"),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:1",
                "--heartbeat-interval",
                "200ms",
            ],
            "--election-timeout-min",
        ),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:1",
                "--election-timeout-max",
                "100ms",
            ],
            "--election-timeout-max",
        ),
        (&["--node-id", "0"], "--grpc-advertise"),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:1",
                "--write-queue-max",
                "10",
            ],
            "--write-queue-max",
        ),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:5",
                "--admin-listen",
                "127.0.0.1:5",
            ],
            "--admin-listen",
        ),
        (
            &[
                "--node-id",
                "3",
                "--statefulset",
                "n",
                "--headless-service",
                "h",
                "--namespace",
                "x",
                "--replicas",
                "3",
                "--hostname",
                "n-1",
            ],
            "--node-id",
        ),
        (
            &[
                "--statefulset",
                "n",
                "--headless-service",
                "h",
                "--namespace",
                "x",
                "--replicas",
                "3",
                "--hostname",
                "other-1",
            ],
            "--hostname",
        ),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:1",
                "--heartbeat-interval",
                "fast",
            ],
            "--heartbeat-interval",
        ),
        (
            &[
                "--node-id",
                "0",
                "--grpc-listen",
                "127.0.0.1:1",
                "--push-version-only-delay",
                "0ms",
            ],
            "--push-version-only-delay",
        ),
    ];
    for (args, flag) in cases {
        let err = parse(args).expect_err(&format!("{args:?} must be refused"));
        assert!(
            err.contains(flag),
            "{args:?}: error {err:?} does not name {flag}"
        );
    }
}

/// A list and a StatefulSet pattern cannot both be given.
#[test]
fn peers_and_statefulset_conflict() {
    let err = parse(&[
        "--peer",
        "0=a:1",
        "--statefulset",
        "n",
        "--headless-service",
        "h",
        "--namespace",
        "x",
        "--replicas",
        "3",
        "--hostname",
        "n-0",
    ])
    .unwrap_err();
    assert!(
        err.contains("--statefulset") || err.contains("--peer"),
        "{err}"
    );
}

#[test]
fn ordinals() {
    assert_eq!(ordinal_of("netting-0", "netting"), Some(0));
    assert_eq!(ordinal_of("netting-12", "netting"), Some(12));
    assert_eq!(ordinal_of("netting-x", "netting"), None);
    assert_eq!(ordinal_of("netting", "netting"), None);
    assert_eq!(ordinal_of("other-1", "netting"), None);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert!(parse_duration("2").is_err());
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("ms").is_err());
}
