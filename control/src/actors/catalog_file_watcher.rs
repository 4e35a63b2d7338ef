//! Watches the catalog file and, on the leader only, proposes the difference between the file
//! and the file-owned part of the catalog.
//!
//! Every replica watches, so a new leader re-reads the file the moment it wins and proposes what
//! changed while there was none. A file that does not parse is logged with its position and
//! counted; the catalog keeps its last good content. A periodic pass heals missed file events.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use netting_raft::CatalogHandle;
use netting_raft::catalog::ApplyError;
use notify::{RecursiveMode, Watcher};

use super::catalog_writer::{Propose, ProposeError};
use super::leadership::LeadershipChanged;
use crate::catalog_file;

/// The file (or its directory) changed on disk.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FileChanged;

/// Waits for bursts of file events (editors write in several steps) before reading.
const SETTLE: Duration = Duration::from_millis(100);
const RESYNC_EVERY: Duration = Duration::from_secs(10);

pub struct CatalogFileWatcher {
    path: PathBuf,
    catalog: CatalogHandle,
    writer: Recipient<Propose>,
    is_leader: bool,
    reconciling: bool,
    /// A change arrived while reconciling: run again afterwards.
    dirty: bool,
    settle_pending: bool,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for CatalogFileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogFileWatcher")
            .field("path", &self.path)
            .field("is_leader", &self.is_leader)
            .finish()
    }
}

impl CatalogFileWatcher {
    pub fn new(path: PathBuf, catalog: CatalogHandle, writer: Recipient<Propose>) -> Self {
        Self {
            path,
            catalog,
            writer,
            is_leader: false,
            reconciling: false,
            dirty: false,
            settle_pending: false,
            _watcher: None,
        }
    }

    fn start_watching(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                addr.do_send(FileChanged);
            }
        };
        // Watch the directory, not the file: editors and Kubernetes ConfigMap updates replace
        // the file by rename, which a watch on the old inode would miss.
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        let watcher = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        match watcher {
            Ok(w) => self._watcher = Some(w),
            Err(err) => tracing::warn!(
                path = %dir.display(),
                error = %err,
                "cannot watch the catalog file directory; relying on the periodic resync"
            ),
        }
    }

    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if !self.is_leader {
            return;
        }
        if self.reconciling {
            self.dirty = true;
            return;
        }
        self.reconciling = true;
        self.dirty = false;
        let path = self.path.clone();
        let catalog = self.catalog.clone();
        let writer = self.writer.clone();
        let pass = async move { reconcile_once(path, catalog, writer).await };
        ctx.spawn(pass.into_actor(self).map(|(), act, ctx| {
            act.reconciling = false;
            if act.dirty {
                act.reconcile(ctx);
            }
        }));
    }
}

async fn reconcile_once(path: PathBuf, catalog: CatalogHandle, writer: Recipient<Propose>) {
    let content = match tokio::fs::read_to_string(&path).await {
        Ok(content) => content,
        Err(err) => {
            metrics::counter!("netting_catalog_file_errors_total").increment(1);
            tracing::error!(path = %path.display(), error = %err, "cannot read the catalog file; keeping the last good catalog");
            return;
        }
    };
    let desired = match catalog_file::parse(&path, &content) {
        Ok(desired) => desired,
        Err(err) => {
            metrics::counter!("netting_catalog_file_errors_total").increment(1);
            tracing::error!(
                path = %err.path,
                line = err.line,
                column = err.column,
                error = %err.message,
                "the catalog file is invalid; keeping the last good catalog"
            );
            return;
        }
    };
    let plan = catalog.read(|c| catalog_file::reconcile(c, &desired));
    metrics::gauge!("netting_catalog_file_conflicts").set(plan.conflicts.len() as f64);
    for (key, owner) in &plan.conflicts {
        tracing::warn!(path = %path.display(), service = %key, owner = owner.as_str(),
            "the catalog file lists a service another source owns; leaving it to its owner");
    }
    if plan.commands.is_empty() {
        return;
    }
    tracing::info!(path = %path.display(), commands = plan.commands.len(), "proposing catalog file changes");
    // Sent together so the writer batches them into as few entries as possible.
    let answers = futures::future::join_all(
        plan.commands
            .into_iter()
            .map(|c| writer.send(Propose::internal(c))),
    )
    .await;
    for answer in &answers {
        // Another source took the service between the read above and the write.
        if let Ok(Err(ProposeError::Refused {
            error: error @ ApplyError::OwnedByOtherSource { key, owner, .. },
            ..
        })) = answer
        {
            tracing::warn!(path = %path.display(), service = %key, owner = %owner, %error,
                "the catalog file's change was refused; leaving the service to its owner");
        }
    }
    let failed = answers
        .iter()
        .filter(|a| !matches!(a, Ok(Ok(_)) | Ok(Err(ProposeError::Refused { .. }))))
        .count();
    if failed > 0 {
        // The next resync proposes whatever did not commit.
        tracing::warn!(
            failed,
            "some catalog file changes did not commit; will retry"
        );
    }
    metrics::counter!("netting_catalog_file_reloads_total").increment(1);
}

impl Actor for CatalogFileWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_watching(ctx);
        ctx.run_interval(RESYNC_EVERY, |act, ctx| act.reconcile(ctx));
    }
}

impl Handler<LeadershipChanged> for CatalogFileWatcher {
    type Result = ();

    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Self::Context) {
        let became_leader = msg.is_leader && !self.is_leader;
        self.is_leader = msg.is_leader;
        if became_leader {
            self.reconcile(ctx);
        }
    }
}

impl Handler<FileChanged> for CatalogFileWatcher {
    type Result = ();

    fn handle(&mut self, _: FileChanged, ctx: &mut Self::Context) {
        if self.settle_pending {
            return;
        }
        self.settle_pending = true;
        ctx.run_later(SETTLE, |act, ctx| {
            act.settle_pending = false;
            act.reconcile(ctx);
        });
    }
}
