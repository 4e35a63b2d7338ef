//! `netting-proxy`: see the crate documentation.
//!
//! Exit status: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when a listener cannot be
//! bound or the runtime fails, 2 for bad flags.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use netting_discovery_client::{DiscoveryClient, ProxyConfig, Validator};
use netting_proxy::admin::{self, AdminState};
use netting_proxy::balance::Balancer;
use netting_proxy::cli::Args;
use netting_proxy::dataplane::{self, DataPlane, Settings};
use netting_proxy::metrics;
use netting_proxy::routes::{self, Routes};
use tokio::net::TcpListener;
use tokio::sync::watch;

fn main() -> ExitCode {
    let args = Args::parse();
    netting_log::init("info");
    let discovery = match args.discovery() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("netting-proxy: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("netting-proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, discovery)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("netting-proxy: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, discovery: netting_discovery_client::ClientConfig) -> anyhow::Result<()> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    metrics::describe();
    netting_discovery_client::describe_metrics();

    let bind = |address| async move {
        TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
    };
    let outbound = bind(args.outbound_listen).await?;
    let inbound = bind(args.inbound_listen).await?;
    let admin_listener = bind(args.admin_listen).await?;

    // A config the routing table cannot be built from is NACKed; the last good one stays.
    let validator: Validator = Arc::new(|config: &ProxyConfig| {
        routes::validate(config).inspect_err(|reason| {
            metrics::config_rejected();
            tracing::warn!(version = config.version, %reason, "config refused");
        })
    });
    let client = DiscoveryClient::spawn(discovery, Some(validator))?;
    let balancer = Arc::new(Balancer::new());
    let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::empty()));
    tokio::spawn(follow_config(client.config(), routes_tx, balancer.clone()));
    tokio::spawn(follow_status(client.status()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            prometheus,
            config: client.config(),
            status: client.status(),
            draining: draining.clone(),
        },
        stop_rx.clone(),
    ));
    let plane = DataPlane {
        routes: routes_rx,
        balancer,
        settings: Settings {
            connect_timeout: args.connect_timeout,
            request_timeout: args.request_timeout,
            max_header_bytes: args.max_header_bytes,
        },
    };
    let data_task = tokio::spawn(dataplane::serve(
        outbound,
        inbound,
        plane,
        stop_rx,
        args.drain_timeout,
    ));
    tracing::info!(
        outbound = %args.outbound_listen,
        inbound = %args.inbound_listen,
        admin = %args.admin_listen,
        "proxy started"
    );

    wait_for_signal().await?;
    tracing::info!(drain = ?args.drain_timeout, "stopping: draining connections");
    draining.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    if let Err(error) = data_task.await {
        tracing::warn!(%error, "the data plane task failed");
    }
    let _ = admin_task.await;
    client.shutdown().await;
    Ok(())
}

/// Rebuilds the routing table for every config the client publishes (the client has already
/// validated it), and forgets balancer statistics of endpoints that left the catalog.
async fn follow_config(
    mut config: watch::Receiver<Arc<ProxyConfig>>,
    routes: watch::Sender<Arc<Routes>>,
    balancer: Arc<Balancer>,
) {
    loop {
        let current = config.borrow_and_update().clone();
        match Routes::from_config(&current) {
            Ok(table) => {
                metrics::config_applied(table.version());
                balancer.retain(|endpoint| table.lookup(*endpoint).is_some());
                routes.send_replace(Arc::new(table));
            }
            // Cannot happen for a validated config; keep the last table if it does.
            Err(error) => tracing::error!(%error, "published config cannot be routed"),
        }
        if config.changed().await.is_err() {
            return;
        }
    }
}

async fn follow_status(mut status: watch::Receiver<netting_discovery_client::ConnectionStatus>) {
    loop {
        metrics::control_plane_connected(status.borrow_and_update().connected);
        if status.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
