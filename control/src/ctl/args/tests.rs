#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::CommandFactory;
use clap::error::ErrorKind;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("nettingctl").chain(args.iter().copied()))
}

/// clap's own consistency checks pass (no clashing names, valid groups).
#[test]
fn command_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Global options have their documented defaults and may follow the subcommand.
#[test]
fn global_defaults_and_positions() {
    let cli = parse(&["status"]).unwrap();
    assert!(cli.global.addr.is_empty());
    assert_eq!(cli.global.timeout, Duration::from_secs(5));
    assert_eq!(cli.global.output, OutputFormat::Table);

    let cli = parse(&[
        "catalog",
        "list",
        "--addr",
        "a:1,b:2",
        "--addr",
        "c:3",
        "-o",
        "json",
        "--timeout",
        "250ms",
    ])
    .unwrap();
    assert_eq!(cli.global.addr, ["a:1,b:2", "c:3"]);
    assert_eq!(cli.global.output, OutputFormat::Json);

    // clap-rs/clap#1570: a global's values after the subcommand replace those before it.
    let cli = parse(&[
        "--addr",
        "a:1",
        "--timeout",
        "1s",
        "status",
        "--addr",
        "c:3",
    ])
    .unwrap();
    assert_eq!(cli.global.addr, ["c:3"]);
    assert_eq!(cli.global.timeout, Duration::from_secs(1));
    assert_eq!(
        parse(&["status", "--timeout", "250ms"])
            .unwrap()
            .global
            .timeout,
        Duration::from_millis(250)
    );
}

/// Durations take ms, s and m with decimals; missing units, zero and junk are refused.
#[test]
fn durations_parse_humanely() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    for bad in ["5", "0s", "-1s", "s", "5h", "1..2s", "", "1e3s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
    }
}

/// `catalog register` takes every option, repeatable ones included, and defaults ready to true.
#[test]
fn register_parses_all_options() {
    let cli = parse(&[
        "catalog",
        "register",
        "shop/web",
        "--address",
        "10.0.0.7",
        "--port",
        "8080",
        "--zone",
        "eu-1a",
        "--pod",
        "web-0",
        "--service-port",
        "http:8080:http",
        "--service-port",
        "admin:9000",
        "--label",
        "app=web",
        "--label",
        "tier=",
        "--timeout-ms",
        "1500",
        "--max-retries",
        "2",
        "--load-balancer",
        "p2c_ewma",
    ])
    .unwrap();
    let Command::Catalog(CatalogCommand::Register(args)) = cli.command else {
        panic!("wrong command");
    };
    assert_eq!(args.service.to_string(), "shop/web");
    assert_eq!(args.address, "10.0.0.7".parse::<IpAddr>().unwrap());
    assert_eq!(args.port, 8080);
    assert!(args.ready);
    assert_eq!(args.zone.as_deref(), Some("eu-1a"));
    assert_eq!(args.service_ports[1].protocol, Protocol::Tcp);
    assert_eq!(args.service_ports[0].protocol, Protocol::Http);
    assert_eq!(
        args.labels[1],
        Label {
            key: "tier".into(),
            value: String::new()
        }
    );
    assert_eq!(args.load_balancer, Some(LoadBalancerArg::P2cEwma));

    let cli = parse(&[
        "catalog",
        "register",
        "a/b",
        "--address",
        "::1",
        "--port",
        "1",
        "--ready",
        "false",
    ])
    .unwrap();
    let Command::Catalog(CatalogCommand::Register(args)) = cli.command else {
        panic!("wrong command");
    };
    assert!(!args.ready);
}

/// Malformed names, ports, labels, protocols and addresses are usage errors (exit 2).
#[test]
fn obvious_bad_input_is_a_usage_error() {
    let base = ["catalog", "register"];
    for bad in [
        &["web", "--address", "10.0.0.1", "--port", "80"][..],
        &["Shop/web", "--address", "10.0.0.1", "--port", "80"],
        &["shop/web/x", "--address", "10.0.0.1", "--port", "80"],
        &["shop/", "--address", "10.0.0.1", "--port", "80"],
        &["shop/web", "--address", "10.0.0.1:80", "--port", "80"],
        &["shop/web", "--address", "10.0.0.1", "--port", "0"],
        &["shop/web", "--address", "10.0.0.1", "--port", "65536"],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--label",
            "novalue",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--label",
            "=v",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--label",
            "a=has space",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--service-port",
            "http",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--service-port",
            "h:80:udp",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--service-port",
            "h:0",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--ready",
            "yes",
        ],
        &[
            "shop/web",
            "--address",
            "10.0.0.1",
            "--port",
            "80",
            "--load-balancer",
            "random",
        ],
        &["shop/web", "--address", "10.0.0.1"],
    ] {
        let args: Vec<&str> = base.iter().chain(bad).copied().collect();
        let err = parse(&args).expect_err(&format!("{bad:?} must be refused"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
    let err = parse(&["catalog", "get", "Bad_Ns/web"]).unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
}

/// Deregister needs exactly one of an endpoint (address and port) or --whole-service.
#[test]
fn deregister_never_defaults_to_the_whole_service() {
    let err = parse(&["catalog", "deregister", "shop/web"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    assert!(parse(&["catalog", "deregister", "shop/web", "--address", "10.0.0.1"]).is_err());
    assert!(parse(&["catalog", "deregister", "shop/web", "--port", "80"]).is_err());
    assert!(
        parse(&[
            "catalog",
            "deregister",
            "shop/web",
            "--whole-service",
            "--address",
            "10.0.0.1",
            "--port",
            "80"
        ])
        .is_err()
    );
    assert!(
        parse(&[
            "catalog",
            "deregister",
            "shop/web",
            "--whole-service",
            "--port",
            "80"
        ])
        .is_err()
    );

    let cli = parse(&["catalog", "deregister", "shop/web", "--whole-service"]).unwrap();
    let Command::Catalog(CatalogCommand::Deregister(args)) = cli.command else {
        panic!("wrong command");
    };
    assert!(args.whole_service && args.address.is_none());

    let cli = parse(&[
        "catalog",
        "deregister",
        "shop/web",
        "--address",
        "10.0.0.1",
        "--port",
        "80",
    ])
    .unwrap();
    let Command::Catalog(CatalogCommand::Deregister(args)) = cli.command else {
        panic!("wrong command");
    };
    assert_eq!(args.port, Some(80));
}

/// Read commands and member commands parse their flags and arguments.
#[test]
fn read_and_member_commands_parse() {
    let cli = parse(&["catalog", "list", "--namespace", "shop", "--linearizable"]).unwrap();
    let Command::Catalog(CatalogCommand::List(args)) = cli.command else {
        panic!("wrong command");
    };
    assert_eq!(args.namespace.as_deref(), Some("shop"));
    assert!(args.linearizable);

    let cli = parse(&["members", "remove", "3"]).unwrap();
    let Command::Members(MembersCommand::Remove(args)) = cli.command else {
        panic!("wrong command");
    };
    assert_eq!(args.node_id, 3);
    assert!(parse(&["members", "remove", "three"]).is_err());
    assert!(matches!(
        parse(&["members", "list"]).unwrap().command,
        Command::Members(MembersCommand::List)
    ));
}

/// `sessions` takes -v/--verbose; `config` takes NAMESPACE/POD, the pod as any non-empty text.
#[test]
fn sessions_and_config_parse() {
    let Command::Sessions(args) = parse(&["sessions"]).unwrap().command else {
        panic!("wrong command");
    };
    assert!(!args.verbose);
    for flag in ["-v", "--verbose"] {
        let Command::Sessions(args) = parse(&["sessions", flag, "-o", "json"]).unwrap().command
        else {
            panic!("wrong command");
        };
        assert!(args.verbose);
    }
    let Command::Config(args) = parse(&["config", "shop/web-7d9f_x.0"]).unwrap().command else {
        panic!("wrong command");
    };
    assert_eq!(
        args.pod,
        PodRef {
            namespace: "shop".into(),
            pod: "web-7d9f_x.0".into()
        }
    );
    assert_eq!(args.pod.to_string(), "shop/web-7d9f_x.0");
}

/// A pod reference without a slash, with a bad namespace or an empty pod is a usage error.
#[test]
fn bad_pod_references_are_usage_errors() {
    for bad in ["web-0", "Shop/web-0", "/web-0", "shop/", "shop/web\u{7}"] {
        let err = parse(&["config", bad]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
    }
    assert_eq!(
        parse(&["config"]).unwrap_err().kind(),
        ErrorKind::MissingRequiredArgument
    );
}
