//! The catalog writer: the one way catalog commands reach Raft on the leader.
//!
//! Concurrent writers are batched into one Raft entry (one fsync, one replication round trip)
//! without a timer: while a batch is in flight, new commands queue, and the queue goes out as
//! the next batch as soon as a slot frees. Under light load a command goes out at once; under
//! heavy load batches grow by themselves.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Instant;

use actix::prelude::*;
use netting_raft::catalog::{
    Applied, ApplyError, BatchResponse, CatalogCommand, CommandBatch, LogIndex, RequestId,
};
use netting_raft::{NodeId, Raft};
use openraft::error::{ClientWriteError, RaftError};
use thiserror::Error;
use tokio::sync::oneshot;

/// Proposes one catalog command and answers once it is committed and applied.
#[derive(Debug, Message)]
#[rtype(result = "Result<Proposed, ProposeError>")]
pub struct Propose {
    pub command: CatalogCommand,
    /// Set for a client's write, so that a retry of it is applied at most once.
    pub request: Option<RequestId>,
}

impl Propose {
    /// A client's write, named by its request id.
    pub fn request(request: RequestId, command: CatalogCommand) -> Self {
        Self {
            command,
            request: Some(request),
        }
    }

    /// A write of the replica's own (bootstrap, a reconciling source) that is safe to apply
    /// again as it is.
    pub fn internal(command: CatalogCommand) -> Self {
        Self {
            command,
            request: None,
        }
    }
}

/// A committed command and what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    pub applied: Applied,
    /// Catalog version after the entry that carried the command.
    pub version: LogIndex,
    /// Log index of that entry.
    pub log_index: LogIndex,
    pub leader_id: NodeId,
    /// The request had been applied before; `applied` and `version` are from then.
    pub duplicate: bool,
}

/// Why a proposal did not commit, or committed with a refusal.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica is not the leader; retry on the leader (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// Committed, but the state machine refused it (e.g. not found).
    #[error("{error}")]
    Refused {
        error: ApplyError,
        version: LogIndex,
    },
    /// Raft is shutting down or failed; the outcome of the command is unknown.
    #[error("raft is unavailable: {0}")]
    Unavailable(String),
    /// The writer stopped before answering; the outcome of the command is unknown.
    #[error("the catalog writer stopped")]
    WriterGone,
    /// The queue was full: the command was refused before it was proposed, so it was not
    /// applied.
    #[error("{queued} catalog writes are already waiting on the leader")]
    QueueFull { queued: usize },
}

/// What the writer needs of Raft: commit one batch and answer with its results. A seam so
/// tests can hold batches in flight and see exactly what was batched.
pub trait BatchCommitter: Clone + Unpin + 'static {
    fn commit(
        &self,
        batch: CommandBatch,
    ) -> Pin<Box<dyn Future<Output = Result<Committed, ProposeError>> + Send>>;
}

/// A committed entry: its log index and the state machine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub log_index: LogIndex,
    pub response: BatchResponse,
}

impl BatchCommitter for Raft {
    fn commit(
        &self,
        batch: CommandBatch,
    ) -> Pin<Box<dyn Future<Output = Result<Committed, ProposeError>> + Send>> {
        let raft = self.clone();
        Box::pin(async move {
            match raft.client_write(batch).await {
                Ok(response) => Ok(Committed {
                    log_index: response.log_id.index,
                    response: response.data,
                }),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    Err(ProposeError::NotLeader {
                        leader: fwd.leader_id.zip(fwd.leader_node.map(|n| n.addr)),
                    })
                }
                Err(RaftError::APIError(other)) => {
                    Err(ProposeError::Unavailable(other.to_string()))
                }
                Err(RaftError::Fatal(fatal)) => Err(ProposeError::Unavailable(fatal.to_string())),
            }
        })
    }
}

struct Pending {
    proposal: Propose,
    reply: oneshot::Sender<Result<Proposed, ProposeError>>,
    queued_at: Instant,
}

/// How much the writer holds at once.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Commands in one Raft entry.
    pub max_batch: usize,
    /// Entries replicating at once.
    pub max_in_flight: usize,
    /// Commands waiting for an entry; beyond it a command is refused with
    /// [`ProposeError::QueueFull`], so that a flood of writes costs bounded memory and every
    /// writer hears at once that it must slow down.
    pub max_queued: usize,
}

/// Batches proposals into Raft entries.
pub struct CatalogWriter<C: BatchCommitter = Raft> {
    raft: C,
    node_id: NodeId,
    queue: VecDeque<Pending>,
    in_flight: usize,
    max_in_flight: usize,
    max_batch: usize,
    max_queued: usize,
}

impl<C: BatchCommitter> std::fmt::Debug for CatalogWriter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWriter")
            .field("node_id", &self.node_id)
            .field("queued", &self.queue.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<C: BatchCommitter> CatalogWriter<C> {
    pub fn new(raft: C, node_id: NodeId, limits: WriterLimits) -> Self {
        let max_batch = limits.max_batch.max(1);
        Self {
            raft,
            node_id,
            queue: VecDeque::new(),
            in_flight: 0,
            max_in_flight: limits.max_in_flight.max(1),
            max_batch,
            max_queued: limits.max_queued.max(max_batch),
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.in_flight < self.max_in_flight && !self.queue.is_empty() {
            let take = self.queue.len().min(self.max_batch);
            let batch: Vec<Pending> = self.queue.drain(..take).collect();
            self.in_flight += 1;
            metrics::histogram!("netting_catalog_write_batch_size").record(batch.len() as f64);
            let raft = self.raft.clone();
            let node_id = self.node_id;
            let write = async move { write_batch(raft, node_id, batch).await };
            ctx.spawn(write.into_actor(self).map(|(), act, ctx| {
                act.in_flight -= 1;
                act.flush(ctx);
            }));
        }
    }
}

impl<C: BatchCommitter> Actor for CatalogWriter<C> {
    type Context = Context<Self>;
}

impl<C: BatchCommitter> Handler<Propose> for CatalogWriter<C> {
    type Result = ResponseFuture<Result<Proposed, ProposeError>>;

    fn handle(&mut self, msg: Propose, ctx: &mut Self::Context) -> Self::Result {
        if self.queue.len() >= self.max_queued {
            metrics::counter!("netting_catalog_writes_refused_total", "reason" => "queue_full")
                .increment(1);
            let queued = self.queue.len();
            return Box::pin(async move { Err(ProposeError::QueueFull { queued }) });
        }
        let (reply, answer) = oneshot::channel();
        self.queue.push_back(Pending {
            proposal: msg,
            reply,
            queued_at: Instant::now(),
        });
        self.flush(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(ProposeError::WriterGone)) })
    }
}

async fn write_batch<C: BatchCommitter>(raft: C, node_id: NodeId, batch: Vec<Pending>) {
    let (requests, waiters): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|p| {
            (
                (p.proposal.request, p.proposal.command),
                (p.reply, p.queued_at),
            )
        })
        .unzip();
    let started = Instant::now();
    let result = raft.commit(CommandBatch::new(requests)).await;
    metrics::histogram!("netting_catalog_write_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(committed) => {
            let log_index = committed.log_index;
            let mut results = committed.response.results.into_iter();
            for (reply, queued_at) in waiters {
                let answer = match results.next() {
                    Some(outcome) => match outcome.result {
                        Ok(applied) => Ok(Proposed {
                            applied,
                            version: outcome.version,
                            log_index,
                            leader_id: node_id,
                            duplicate: outcome.duplicate,
                        }),
                        Err(error) => {
                            metrics::counter!("netting_catalog_writes_refused_total",
                                "reason" => error.kind())
                            .increment(1);
                            Err(ProposeError::Refused {
                                error,
                                version: outcome.version,
                            })
                        }
                    },
                    // The state machine answers every command of a batch; a short answer is a
                    // bug, and the caller must not believe its command was applied.
                    None => Err(ProposeError::Unavailable(
                        "state machine returned fewer results than commands".into(),
                    )),
                };
                metrics::histogram!("netting_catalog_propose_seconds")
                    .record(queued_at.elapsed().as_secs_f64());
                let _ = reply.send(answer);
            }
        }
        Err(answer) => {
            for (reply, _) in waiters {
                let _ = reply.send(Err(answer.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
