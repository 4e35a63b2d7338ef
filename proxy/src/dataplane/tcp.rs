//! Opaque TCP: one upstream connection per client connection, bytes copied both ways until
//! both sides are done (a half-close is passed on). A catalog destination is balanced per
//! connection; a failed connect is tried on another endpoint within the policy's retries and
//! the retry budget, since nothing was sent yet. When no upstream can be had, the client's
//! connection is closed.

use std::time::Instant;

use tokio::net::TcpStream;

use crate::balance::{InFlight, Outcome};
use crate::metrics::{self, Direction};

use super::Shared;
use super::connect::connect;
use super::io::ClientIo;
use super::target::Target;

pub(crate) async fn proxy(
    shared: &Shared,
    direction: Direction,
    destination: std::net::SocketAddr,
    mut client: ClientIo<TcpStream>,
) {
    let routes = shared.plane.routes.borrow().clone();
    let target = Target::resolve(direction, destination, &routes);
    let Some((mut upstream, in_flight)) = open(shared, direction, &target).await else {
        return;
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "TCP connection ended with an error");
    }
    if let Some((in_flight, connect_time)) = in_flight {
        // The connection's latency sample is its connect time: its length says nothing
        // about the endpoint.
        in_flight.finish(Outcome::Success(connect_time));
    }
}

type Load = (InFlight, std::time::Duration);

async fn open(
    shared: &Shared,
    direction: Direction,
    target: &Target<'_>,
) -> Option<(TcpStream, Option<Load>)> {
    if target.is_balanced() {
        shared.budget.deposit();
    }
    let balancer = &shared.plane.balancer;
    let mut tried = Vec::new();
    loop {
        let Some(endpoint) = target.choose(balancer, &tried) else {
            metrics::proxy_error(direction, "no_endpoint");
            tracing::debug!("no ready endpoint; closing");
            return None;
        };
        let in_flight = target.is_balanced().then(|| balancer.start(endpoint));
        let started = Instant::now();
        match connect(endpoint, shared.plane.settings.connect_timeout).await {
            Ok(stream) => {
                let load = in_flight.map(|in_flight| (in_flight, started.elapsed()));
                return Some((stream, load));
            }
            Err(error) => {
                if let Some(in_flight) = in_flight {
                    in_flight.finish(Outcome::Failure);
                }
                let may_retry = tried.len() < target.max_retries() as usize;
                let retry = may_retry && shared.budget.withdraw();
                if may_retry {
                    metrics::retry(
                        direction,
                        if retry { "retried" } else { "budget_exhausted" },
                    );
                }
                if !retry {
                    metrics::proxy_error(direction, error.kind());
                    tracing::debug!(%error, "cannot reach an upstream; closing");
                    return None;
                }
                tried.push(endpoint);
            }
        }
    }
}
