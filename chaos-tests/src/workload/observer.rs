//! The observer: every few tens of milliseconds it asks each replica's admin server for
//! `/debug/raft` and records what it says. The admin port is never cut by a fault, so the
//! observer sees a partitioned replica too; a killed or paused one simply does not answer.
//!
//! The samples feed the "one leader per term" check, the timeline, and the runner, which asks
//! who leads before it injects a fault aimed at "the leader".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Clock, Recorder, ReplicaAddress};
use crate::history::{Micros, ReplicaSample};

/// Time allowed for one look; a replica slower than this counts as not answering.
const LOOK_TIMEOUT: Duration = Duration::from_millis(250);

/// The parts of `/debug/raft` the lab reads.
#[derive(Debug, Deserialize)]
struct RaftView {
    node_id: u64,
    state: String,
    term: u64,
    leader: Option<u64>,
    applied_index: u64,
    catalog_version: u64,
    last_applied: Option<LogId>,
}

#[derive(Debug, Deserialize)]
struct LogId {
    term: u64,
    leader: u64,
}

/// The latest sample of each replica, shared with the runner.
pub type Latest = Arc<Mutex<BTreeMap<usize, ReplicaSample>>>;

/// The running observer.
#[derive(Debug)]
pub struct Observer {
    latest: Latest,
    clock: Clock,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Observer {
    pub fn start(
        replicas: Vec<ReplicaAddress>,
        interval: Duration,
        recorder: Recorder,
        clock: Clock,
    ) -> Observer {
        let latest: Latest = Arc::default();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(observe(
            replicas,
            interval,
            recorder,
            clock,
            latest.clone(),
            stop_rx,
        ));
        Observer {
            latest,
            clock,
            stop,
            task,
        }
    }

    /// The leader with the highest term among replicas seen within `fresh`, and that term.
    pub fn leader(&self, fresh: Duration) -> Option<(usize, u64)> {
        let now = self.clock.now();
        let horizon = now.saturating_sub(fresh.as_micros() as Micros);
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .values()
            .filter(|s| s.at >= horizon && s.state == "leader")
            .max_by_key(|s| s.term)
            .map(|s| (s.replica, s.term))
    }

    /// The latest sample of every replica seen within `fresh`.
    pub fn fresh_samples(&self, fresh: Duration) -> BTreeMap<usize, ReplicaSample> {
        let now = self.clock.now();
        let horizon = now.saturating_sub(fresh.as_micros() as Micros);
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest
            .iter()
            .filter(|(_, s)| s.at >= horizon)
            .map(|(i, s)| (*i, s.clone()))
            .collect()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn observe(
    replicas: Vec<ReplicaAddress>,
    interval: Duration,
    recorder: Recorder,
    clock: Clock,
    latest: Latest,
    mut stop: watch::Receiver<bool>,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let looks = replicas
            .iter()
            .enumerate()
            .map(|(index, replica)| look(&client, index, replica, &clock));
        for sample in futures::future::join_all(looks).await.into_iter().flatten() {
            latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(sample.replica, sample.clone());
            recorder.sample(sample);
        }
    }
}

/// One look at one replica; `None` when it does not answer in time or answers nonsense.
async fn look(
    client: &Client<HttpConnector, Empty<Bytes>>,
    index: usize,
    replica: &ReplicaAddress,
    clock: &Clock,
) -> Option<ReplicaSample> {
    let uri: hyper::Uri = format!("http://{}/debug/raft", replica.admin)
        .parse()
        .ok()?;
    let fetch = async {
        let response = client.get(uri).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<RaftView>(&body).ok()
    };
    let view = tokio::time::timeout(LOOK_TIMEOUT, fetch).await.ok()??;
    Some(ReplicaSample {
        replica: index,
        node_id: view.node_id,
        at: clock.now(),
        state: view.state,
        term: view.term,
        leader: view.leader,
        applied_index: view.applied_index,
        catalog_version: view.catalog_version,
        last_applied: view.last_applied.map(|id| (id.term, id.leader)),
    })
}
