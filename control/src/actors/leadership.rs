//! What a catalog source hears of leadership. Every replica runs its sources (the catalog
//! file today), but only the leader proposes: a source reconciles when this replica wins an
//! election (what changed while there was no leader is proposed then) and stays quiet while
//! it follows. A source plugs in by handling this one message.

use actix::prelude::*;

/// Whether this replica leads now.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    pub is_leader: bool,
}
