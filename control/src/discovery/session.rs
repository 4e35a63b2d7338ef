//! The protocol of one sidecar stream, as plain decisions: what the sidecar acknowledged, the
//! one response in flight, whether a newer update waits, and when the stream must end.
//!
//! At most one response is unacknowledged at a time. Changes that arrive meanwhile only set a
//! flag; the next response is computed from the live catalog when the sidecar answers. So a
//! slow or stuck sidecar costs a constant amount of memory however many writes it misses. A
//! response unacknowledged past the acknowledgement timeout ends the stream.
//!
//! Every method takes the catalog and the time it needs and returns an [`Action`]; the session
//! actor (`actors::sidecar_session`) only carries it out, so everything here is tested without
//! a runtime.

use std::sync::Arc;
use std::time::Duration;

use netting_raft::catalog::{Catalog, LogIndex};
use tokio::time::Instant;

use super::hello::Subscription;
use super::view::{self, Update};

/// Names one session (one stream) on this replica.
pub type SessionId = u64;

/// Numbers a session's responses; an ACK or NACK names the one it answers.
pub type Nonce = u64;

/// Where the sidecar is, as far as the session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// It has nothing usable from this cluster: it gets a snapshot.
    Nothing,
    /// It has applied this version: it gets deltas from it.
    Version(LogIndex),
}

/// Why a session was told to update; recorded per push and per update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushReason {
    /// Catalog entries changed what subscribed sidecars see.
    CatalogChange,
    /// The pusher could not tell what changed (tombstones dropped) and told every session.
    Resync,
    /// Sent while the previous update was unacknowledged and is now going out.
    Pending,
    /// The first update of a new stream.
    Connect,
    /// Only the version moved for this session: its view did not change since its last update.
    VersionOnly,
}

impl PushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PushReason::CatalogChange => "catalog_change",
            PushReason::Resync => "resync",
            PushReason::Pending => "pending",
            PushReason::Connect => "connect",
            PushReason::VersionOnly => "version_only",
        }
    }
}

/// A change the config pusher announced to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub version: LogIndex,
    pub reason: PushReason,
    /// `Some(since)` when every service of this session that was written after `since` (the
    /// previous push) is, for sidecars, as it was at `since`: only a session that read the
    /// catalog after `since`, and so may hold a state in between, needs an update.
    pub unchanged_since: Option<LogIndex>,
}

/// One response for the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub nonce: Nonce,
    pub version: LogIndex,
    pub update: Update,
    pub reason: PushReason,
    /// When the session ends unless the sidecar answered this response.
    pub ack_deadline: Instant,
}

/// Why a stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The sidecar did not answer a response within the acknowledgement timeout.
    AckTimeout,
    /// The sidecar broke the protocol; the text says how.
    ProtocolError(String),
    /// The stream reached its maximum age and is recycled.
    MaxAge,
    /// The replica is shutting down.
    Shutdown,
    /// The stream can take no more responses: it is gone or wedged.
    StreamGone,
    /// The sidecar closed its side.
    ClientGone,
}

impl Close {
    /// The metric label of the reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            Close::AckTimeout => "ack_timeout",
            Close::ProtocolError(_) => "protocol_error",
            Close::MaxAge => "max_age",
            Close::Shutdown => "shutdown",
            Close::StreamGone => "stream_gone",
            Close::ClientGone => "client_gone",
        }
    }

    /// Whether the sidecar is told why (a status on the stream) or the stream just ends.
    pub fn tells_the_sidecar(&self) -> bool {
        !matches!(self, Close::StreamGone | Close::ClientGone)
    }
}

/// What the session actor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the sidecar has what it needs.
    Nothing,
    /// Nothing yet: an update is in flight, and the next one is computed once it is answered.
    /// `replaced` when a deferred change was already waiting (one update covers both).
    Deferred { replaced: bool },
    /// Send this response.
    Send(Response),
    /// End the stream.
    Close(Close),
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Applied,
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    nonce: Nonce,
    version: LogIndex,
    deadline: Instant,
}

/// The protocol state of one stream.
#[derive(Debug)]
pub struct SessionState {
    subscription: Arc<Subscription>,
    base: Base,
    acked_version: Option<LogIndex>,
    in_flight: Option<InFlight>,
    pending: bool,
    next_nonce: Nonce,
    nacks: u32,
    closed: bool,
    ack_timeout: Duration,
}

impl SessionState {
    pub fn new(subscription: Arc<Subscription>, base: Base, ack_timeout: Duration) -> Self {
        Self {
            subscription,
            base,
            acked_version: None,
            in_flight: None,
            pending: false,
            next_nonce: 1,
            nacks: 0,
            closed: false,
            ack_timeout,
        }
    }

    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.subscription
    }

    /// The last version the sidecar acknowledged on this stream.
    pub fn acked_version(&self) -> Option<LogIndex> {
        self.acked_version
    }

    /// The version of the response in flight.
    pub fn sent_version(&self) -> Option<LogIndex> {
        self.in_flight.map(|f| f.version)
    }

    pub fn nacks(&self) -> u32 {
        self.nacks
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The first response of the stream, sent even when it changes nothing (an empty delta):
    /// it tells the sidecar it is current.
    pub fn on_open(&mut self, catalog: &Catalog, now: Instant) -> Action {
        self.update(catalog, PushReason::Connect, true, now)
    }

    /// The pusher announced a change this session may need.
    pub fn on_change(&mut self, change: Change, catalog: &Catalog, now: Instant) -> Action {
        if self.closed {
            return Action::Nothing;
        }
        let sent = self.sent_version().or(self.acked_version);
        if sent.is_some_and(|v| v >= change.version) && !self.pending {
            return Action::Nothing;
        }
        // What was sent was read at `sent`, no later than `since`: it already matches the
        // catalog for every service written since.
        if let Some(since) = change.unchanged_since
            && sent.is_some_and(|v| v <= since)
        {
            return Action::Nothing;
        }
        self.update(catalog, change.reason, false, now)
    }

    /// The sidecar applied the response `nonce` at `version`.
    pub fn on_ack(
        &mut self,
        version: LogIndex,
        nonce: &str,
        catalog: &Catalog,
        now: Instant,
    ) -> Action {
        self.on_answer(version, nonce, Answer::Applied, catalog, now)
    }

    /// The sidecar refused the response `nonce`; it keeps its last good configuration, so the
    /// base stays where it was.
    pub fn on_nack(
        &mut self,
        version: LogIndex,
        nonce: &str,
        catalog: &Catalog,
        now: Instant,
    ) -> Action {
        self.on_answer(version, nonce, Answer::Refused, catalog, now)
    }

    /// The acknowledgement timer of response `nonce` fired at `now`: the stream ends when
    /// that response is still unanswered and its deadline has passed.
    pub fn on_timeout(&mut self, nonce: Nonce, now: Instant) -> Action {
        match self.in_flight {
            Some(f) if !self.closed && f.nonce == nonce && now >= f.deadline => {
                self.close(Close::AckTimeout)
            }
            _ => Action::Nothing,
        }
    }

    /// The stream ends for `reason` (once: later calls change nothing).
    pub fn close(&mut self, reason: Close) -> Action {
        if self.closed {
            return Action::Nothing;
        }
        self.closed = true;
        Action::Close(reason)
    }

    fn on_answer(
        &mut self,
        version: LogIndex,
        nonce: &str,
        answer: Answer,
        catalog: &Catalog,
        now: Instant,
    ) -> Action {
        if self.closed {
            return Action::Nothing;
        }
        match self.answered(version, nonce) {
            Ok(in_flight) => {
                match answer {
                    Answer::Applied => {
                        self.base = Base::Version(in_flight.version);
                        self.acked_version = Some(in_flight.version);
                    }
                    Answer::Refused => self.nacks = self.nacks.saturating_add(1),
                }
                self.after_answer(catalog, now)
            }
            Err(close) => self.close(close),
        }
    }

    /// Matches an ACK or NACK with the response in flight; anything else breaks the protocol.
    fn answered(&mut self, version: LogIndex, nonce: &str) -> Result<InFlight, Close> {
        match self.in_flight {
            Some(f) if nonce.parse::<Nonce>().ok() == Some(f.nonce) && f.version == version => {
                self.in_flight = None;
                Ok(f)
            }
            _ => Err(Close::ProtocolError(format!(
                "nonce {nonce:?} with version {version} does not match the response in flight"
            ))),
        }
    }

    fn after_answer(&mut self, catalog: &Catalog, now: Instant) -> Action {
        if !self.pending {
            return Action::Nothing;
        }
        self.pending = false;
        self.update(catalog, PushReason::Pending, false, now)
    }

    /// An update from the sidecar's base to the live catalog: a delta when the catalog can
    /// tell one, else a snapshot. With `always`, an empty delta is sent too.
    fn update(
        &mut self,
        catalog: &Catalog,
        reason: PushReason,
        always: bool,
        now: Instant,
    ) -> Action {
        if self.closed {
            return Action::Nothing;
        }
        if self.in_flight.is_some() {
            let replaced = self.pending;
            self.pending = true;
            return Action::Deferred { replaced };
        }
        let base_version = match self.base {
            Base::Version(v) => v,
            Base::Nothing => 0,
        };
        // Never below what the sidecar has: a sidecar may claim a version that changed
        // nothing it sees, above this catalog's last change.
        let version = catalog.version().max(base_version);
        let delta = match self.base {
            Base::Version(v) => view::delta(catalog, &self.subscription, v),
            Base::Nothing => None,
        };
        let update = match delta {
            Some((upserted, removed)) if upserted.is_empty() && removed.is_empty() && !always => {
                return Action::Nothing;
            }
            Some((upserted, removed)) => Update::Delta {
                from_version: base_version,
                upserted,
                removed,
            },
            None => Update::Snapshot(view::snapshot(catalog, &self.subscription)),
        };
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let ack_deadline = now + self.ack_timeout;
        self.in_flight = Some(InFlight {
            nonce,
            version,
            deadline: ack_deadline,
        });
        Action::Send(Response {
            nonce,
            version,
            update,
            reason,
            ack_deadline,
        })
    }
}

#[cfg(test)]
mod tests;
