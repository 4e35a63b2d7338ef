#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use netting_raft::catalog::{Outcome, ServiceKey, Source};
use tokio::sync::Notify;

use super::*;

/// Records every batch and holds each one until released, like a slow fsync.
#[derive(Clone, Default)]
struct HeldCommits {
    batches: Arc<Mutex<Vec<usize>>>,
    release: Arc<Notify>,
}

impl BatchCommitter for HeldCommits {
    fn commit(
        &self,
        batch: CommandBatch,
    ) -> Pin<Box<dyn Future<Output = Result<Committed, ProposeError>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let index = {
                let mut batches = this.batches.lock().unwrap();
                batches.push(batch.commands.len());
                batches.len() as u64
            };
            this.release.notified().await;
            let results = batch
                .commands
                .iter()
                .map(|_| Outcome {
                    result: Ok(Applied { changed: true }),
                    version: index,
                    duplicate: false,
                })
                .collect();
            Ok(Committed {
                log_index: index,
                response: BatchResponse {
                    results,
                    version: index,
                },
            })
        })
    }
}

fn limits(max_batch: usize, max_in_flight: usize) -> WriterLimits {
    WriterLimits {
        max_batch,
        max_in_flight,
        max_queued: 10_000,
    }
}

fn command(i: usize) -> CatalogCommand {
    CatalogCommand::DeleteService {
        key: ServiceKey::new("default", &format!("svc-{i}")).unwrap(),
        source: Some(Source::Api),
    }
}

async fn until_batches(committer: &HeldCommits, count: usize) {
    for _ in 0..1000 {
        if committer.batches.lock().unwrap().len() >= count {
            return;
        }
        tokio::task::yield_now().await;
        actix::clock::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!(
        "expected {count} batches, saw {:?}",
        committer.batches.lock().unwrap()
    );
}

/// While entries are in flight, new proposals queue and go out together as one entry as soon
/// as a slot frees; every caller gets the answer of its own command.
#[actix::test]
async fn concurrent_proposals_share_an_entry() {
    let committer = HeldCommits::default();
    let writer = CatalogWriter::new(committer.clone(), 7, limits(512, 2)).start();

    let first = writer.send(Propose::internal(command(0)));
    let second = writer.send(Propose::internal(command(1)));
    let first = actix::spawn(first);
    let second = actix::spawn(second);
    until_batches(&committer, 2).await;

    let queued: Vec<_> = (2..12)
        .map(|i| actix::spawn(writer.send(Propose::internal(command(i)))))
        .collect();
    // Both slots are busy: the ten wait. Release the first entry; they go out as one batch.
    actix::clock::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(*committer.batches.lock().unwrap(), vec![1, 1]);
    committer.release.notify_one();
    until_batches(&committer, 3).await;
    assert_eq!(*committer.batches.lock().unwrap(), vec![1, 1, 10]);

    committer.release.notify_one();
    committer.release.notify_one();
    let done = first.await.unwrap().unwrap().unwrap();
    assert_eq!((done.log_index, done.leader_id), (1, 7));
    assert_eq!(second.await.unwrap().unwrap().unwrap().log_index, 2);
    for answer in queued {
        assert_eq!(answer.await.unwrap().unwrap().unwrap().log_index, 3);
    }
}

/// A batch never exceeds the configured size.
#[actix::test]
async fn batches_are_capped() {
    let committer = HeldCommits::default();
    let writer = CatalogWriter::new(committer.clone(), 1, limits(4, 1)).start();
    let answers: Vec<_> = (0..9)
        .map(|i| actix::spawn(writer.send(Propose::internal(command(i)))))
        .collect();
    until_batches(&committer, 1).await;
    for _ in 0..3 {
        committer.release.notify_one();
        tokio::task::yield_now().await;
    }
    until_batches(&committer, 3).await;
    committer.release.notify_one();
    for answer in answers {
        assert!(answer.await.unwrap().unwrap().is_ok());
    }
    let batches = committer.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 9);
    assert!(batches.iter().all(|b| *b <= 4), "{batches:?}");
}

/// A commit failure reaches every caller of the batch as the same error.
#[actix::test]
async fn failure_reaches_every_caller() {
    #[derive(Clone)]
    struct NotLeader;
    impl BatchCommitter for NotLeader {
        fn commit(
            &self,
            _: CommandBatch,
        ) -> Pin<Box<dyn Future<Output = Result<Committed, ProposeError>> + Send>> {
            Box::pin(async {
                Err(ProposeError::NotLeader {
                    leader: Some((2, "b:1".into())),
                })
            })
        }
    }
    let writer = CatalogWriter::new(NotLeader, 1, limits(8, 1)).start();
    let answers: Vec<_> = (0..3)
        .map(|i| writer.send(Propose::internal(command(i))))
        .collect();
    for answer in answers {
        assert!(matches!(
            answer.await.unwrap(),
            Err(ProposeError::NotLeader { .. })
        ));
    }
}

/// A full queue refuses a write at once, before anything is proposed, and takes writes again
/// as soon as it drains; the writes it took are all answered.
#[actix::test]
async fn a_full_queue_refuses_at_once() {
    let committer = HeldCommits::default();
    let writer = CatalogWriter::new(
        committer.clone(),
        1,
        WriterLimits {
            max_batch: 2,
            max_in_flight: 1,
            max_queued: 2,
        },
    )
    .start();
    let in_flight = actix::spawn(writer.send(Propose::internal(command(0))));
    until_batches(&committer, 1).await;
    let queued: Vec<_> = (1..3)
        .map(|i| actix::spawn(writer.send(Propose::internal(command(i)))))
        .collect();
    // The handler runs in order, so the two above are queued before this one arrives.
    let refused = writer.send(Propose::internal(command(3))).await.unwrap();
    assert_eq!(refused, Err(ProposeError::QueueFull { queued: 2 }));
    assert_eq!(
        *committer.batches.lock().unwrap(),
        vec![1],
        "nothing proposed"
    );

    committer.release.notify_one();
    until_batches(&committer, 2).await;
    let taken = actix::spawn(writer.send(Propose::internal(command(4))));
    committer.release.notify_one();
    until_batches(&committer, 3).await;
    committer.release.notify_one();
    assert!(in_flight.await.unwrap().unwrap().is_ok());
    for answer in queued {
        assert!(answer.await.unwrap().unwrap().is_ok());
    }
    assert!(taken.await.unwrap().unwrap().is_ok());
    assert_eq!(*committer.batches.lock().unwrap(), vec![1, 2, 1]);
}
