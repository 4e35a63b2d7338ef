//! Shutdown: draining, closing, and knowing when every connection is gone.
//!
//! Two signals. *Drain* is the `stop` flag from `main`: listeners stop accepting, HTTP
//! connections finish the requests they have and close, TCP connections keep running. *Close*
//! comes when the drain time is over: every task of the data plane ends at its next poll, which
//! drops — and so closes — its sockets. Tasks that belong to a client connection also hold a
//! [`Tracker`] token; when the last token is dropped, draining is done.

use std::future::Future;

use tokio::sync::{mpsc, watch};

/// The drain and close signals, shared by every task of the data plane.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    stop: watch::Receiver<bool>,
    close: watch::Receiver<bool>,
}

/// Resolves once the flag is true, or once its sender is gone (nobody can clear it then).
async fn raised(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

impl Signals {
    pub(crate) fn new(stop: watch::Receiver<bool>, close: watch::Receiver<bool>) -> Signals {
        Signals { stop, close }
    }

    /// Resolves once draining has begun.
    pub(crate) fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        raised(self.stop.clone())
    }

    /// Spawns `task`; it is dropped when the data plane closes, if it has not ended by then.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let close = raised(self.close.clone());
        tokio::spawn(async move {
            tokio::select! {
                biased;
                () = task => {}
                () = close => {}
            }
        });
    }

    /// The executor hyper spawns its per-stream and per-connection tasks on.
    pub(crate) fn executor(&self) -> Exec {
        Exec {
            signals: self.clone(),
        }
    }
}

/// A hyper executor whose tasks end when the data plane closes.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    signals: Signals,
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.signals.spawn(async move {
            future.await;
        });
    }
}

/// Held by every task that belongs to a client connection; draining waits for all of them.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    _token: mpsc::Sender<()>,
}

/// Learns when the last [`Tracker`] is dropped.
#[derive(Debug)]
pub(crate) struct AllDone {
    receiver: mpsc::Receiver<()>,
}

pub(crate) fn tracker() -> (Tracker, AllDone) {
    // Nothing is ever sent: `recv` returns `None` once every sender is gone.
    let (sender, receiver) = mpsc::channel(1);
    (Tracker { _token: sender }, AllDone { receiver })
}

impl AllDone {
    /// Resolves when no tracked task is left.
    pub(crate) async fn wait(&mut self) {
        while self.receiver.recv().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn tasks_end_on_close_and_the_tracker_sees_them_go() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (close_tx, close_rx) = watch::channel(false);
        let signals = Signals::new(stop_rx, close_rx);
        let (tracker, mut done) = tracker();
        signals.spawn(async move {
            let _tracker = tracker;
            std::future::pending::<()>().await;
        });
        stop_tx.send_replace(true);
        signals.draining().await;
        // Draining alone does not end a task that does not finish.
        let waited = tokio::time::timeout(Duration::from_millis(50), done.wait()).await;
        assert!(waited.is_err());
        close_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), done.wait())
            .await
            .unwrap_or_else(|_| panic!("the task outlived close"));
    }
}
