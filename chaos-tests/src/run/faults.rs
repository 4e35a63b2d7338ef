//! Injecting one fault and healing it: the schedule's roles are resolved against the leader
//! the observer sees at that moment.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use super::cluster::{Cluster, GRPC_PORT};
use super::figures::FaultLog;
use super::{FRESH, RunError};
use crate::lab::cuts::Cuts;
use crate::schedule::{Action, Fault, Target};
use crate::workload::Clock;
use crate::workload::observer::Observer;

/// How long to wait for a leader to aim a leader fault at.
const LEADER_WAIT: Duration = Duration::from_secs(15);

/// Injects `fault`, holds it, heals it, and returns what happened when.
pub async fn inject_and_heal(
    cluster: &mut Cluster,
    observer: &Observer,
    clock: Clock,
    fault: &Fault,
    rng: &mut StdRng,
) -> Result<FaultLog, RunError> {
    let (leader, term) = current_leader(observer).await?;
    let replicas = cluster.replicas();
    let target = match fault.target {
        Target::Leader => leader,
        Target::Follower { pick } => {
            let followers: Vec<usize> = (0..replicas).filter(|r| *r != leader).collect();
            followers[pick as usize % followers.len()]
        }
        Target::Replica { index } => index,
    };
    let others: Vec<usize> = (0..replicas).filter(|r| *r != target).collect();
    let leader_node = cluster.node_id(leader);

    let injected = clock.now();
    let (targets, detail) = match fault.action {
        Action::Kill => {
            cluster.kill(target)?;
            (vec![target], format!("kill -9 of replica {target}"))
        }
        Action::Pause => {
            cluster.pause(target)?;
            (vec![target], format!("SIGSTOP to replica {target}"))
        }
        Action::Restart => {
            cluster.terminate(target).await?;
            (vec![target], format!("SIGTERM to replica {target}"))
        }
        Action::WipeDisk => {
            cluster.kill(target)?;
            cluster.wipe(target)?;
            (
                vec![target],
                format!("kill -9 of replica {target} and its data directory deleted"),
            )
        }
        Action::Isolate => {
            cluster.cut(&Cuts::isolate(target, replicas, Some(GRPC_PORT)))?;
            (
                vec![target],
                format!("replica {target} cut from its peers and from clients"),
            )
        }
        Action::Partition => {
            let mut minority = vec![target];
            // With five replicas the minority side has two.
            while minority.len() < replicas.div_ceil(2) - 1 {
                let candidates: Vec<usize> = others
                    .iter()
                    .copied()
                    .filter(|r| !minority.contains(r))
                    .collect();
                minority.push(candidates[rng.random_range(0..candidates.len())]);
            }
            minority.sort_unstable();
            let majority: Vec<usize> = (0..replicas).filter(|r| !minority.contains(r)).collect();
            cluster.cut(&Cuts::partition(&minority, &majority))?;
            (
                minority.clone(),
                format!("partition {minority:?} | {majority:?}"),
            )
        }
        Action::OneWayLoss => {
            let to = others[rng.random_range(0..others.len())];
            cluster.cut(&Cuts::one_way(target, to))?;
            (
                vec![target],
                format!("packets from replica {target} to replica {to} dropped"),
            )
        }
    };
    tokio::time::sleep(fault.hold).await;
    let healed = clock.now();
    match fault.action {
        Action::Kill | Action::Restart | Action::WipeDisk => cluster.start_replica(target)?,
        Action::Pause => cluster.resume(target)?,
        Action::Isolate | Action::Partition | Action::OneWayLoss => cluster.heal_network()?,
    }
    Ok(FaultLog {
        kind: fault.kind(),
        targets,
        detail,
        injected,
        healed,
        leader_before: Some(leader_node),
        term_before: Some(term),
        recovered: None,
    })
}

/// The replica that leads now and its term, waiting a while for one to be elected.
async fn current_leader(observer: &Observer) -> Result<(usize, u64), RunError> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        if let Some(leader) = observer.leader(FRESH) {
            return Ok(leader);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::Timeout {
                what: "have a leader to aim the fault at".to_owned(),
                timeout: LEADER_WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
