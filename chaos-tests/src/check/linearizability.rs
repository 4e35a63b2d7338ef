//! Linearizability of the key-value registers.
//!
//! The check is the classic search for linearization points (Wing & Gong 1993), with the
//! memoisation of Lowe ("Testing for linearizability", 2017) and the layout of the Porcupine
//! checker:
//!
//! - P-compositionality: a history is linearizable iff each register's sub-history is, so the
//!   history is split by key and every key is searched on its own (small problems instead of one
//!   big one).
//! - Each operation becomes a call event and, if it completed, a return event; the events are
//!   sorted by time into a doubly-linked list. The search walks the list: at a call it tries to
//!   linearize that operation now (legal in the model, and a configuration not seen before), then
//!   removes the operation's events and starts again from the front; at a return it has run out
//!   of choices for that operation, so it undoes the most recent choice and tries the next call
//!   after it.
//! - Configurations already explored (the set of linearized operations as a bitset, and the
//!   register's value) are kept in a hashed cache; reaching one again cannot succeed.
//!
//! Three reductions keep the common cases cheap, each exact (none changes the verdict): a read
//! of a value that no write invoked before the read returned could have written is reported
//! without a search; a write of unknown outcome is only placed while a read of its value is
//! still to come (otherwise a write or nothing follows it, as if it never happened); and while
//! the register holds a value no remaining read returns, the acknowledged writes of such values
//! whose calls precede every remaining return are placed at once, in one step, instead of
//! trying every subset of them.
//!
//! The problem is NP-complete, so the search runs within a [`Budget`]; a key whose search runs
//! out of it is reported [`Undecided`], never as passed.
//!
//! Which operations take part: `Failed` ones certainly did not happen and are dropped; reads
//! that did not succeed tell nothing and are dropped. A write whose outcome is unknown (or that
//! has no completion time) may take effect at any time after it was invoked, or never: it has
//! no return event, so it can be linearized anywhere after its call or be left out (Porcupine
//! gives it an infinite return time, and an operation linearized at the very end affects
//! nothing, which is the same thing).
//!
//! Equal timestamps: a call sorts before a return at the same microsecond, so two operations
//! that touch (one returns in the microsecond the other is invoked) count as concurrent. The
//! clock cannot order them, and treating them as ordered could report a violation that did not
//! happen; the price is missing a violation that needs 1 µs of precision to see.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::history::{Micros, Outcome, RegisterOp, RegisterOperation};
use crate::report::CheckResult;

/// How much searching one check may do. Exceeding any limit makes the key undecided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Distinct configurations (linearized set, value) explored for one key.
    pub max_states_per_key: u64,
    /// Approximate memory of one key's cache of explored configurations.
    pub max_cache_bytes_per_key: usize,
    /// When the whole check must stop; keys not finished by then are undecided.
    pub deadline: Option<Instant>,
}

impl Default for Budget {
    /// Generous for the short per-key histories the workload produces (a few hundred
    /// operations), and still bounded in memory; no deadline.
    fn default() -> Self {
        Self {
            max_states_per_key: 2_000_000,
            max_cache_bytes_per_key: 256 << 20,
            deadline: None,
        }
    }
}

impl Budget {
    /// The default budget, stopping at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    /// The default budget with another limit on configurations per key.
    pub fn states_per_key(states: usize) -> Self {
        Self {
            max_states_per_key: u64::try_from(states).unwrap_or(u64::MAX),
            ..Self::default()
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityReport {
    /// Distinct keys in the history.
    pub keys: usize,
    /// Operations that took part in the search.
    pub operations: usize,
    /// Operations left out: failed ones, reads that did not succeed, and writes of unknown
    /// outcome whose value no read returned (they cannot change the verdict).
    pub ignored: usize,
    /// Configurations explored over all keys: how hard the search was.
    pub states_explored: u64,
    /// At most one per key: a key is either linearizable or not.
    pub violations: Vec<Violation>,
    pub undecided: Vec<Undecided>,
}

impl LinearizabilityReport {
    /// True only when every key was shown linearizable: an undecided key is not a pass.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }

    /// The `linearizable` entry of the run report: one line per violating or undecided key
    /// (violations first), at most [`REPORTED_KEYS`] of them.
    pub fn into_check_result(self) -> CheckResult {
        let detail = format!(
            "{} operations on {} registers ({} ignored: failed, unanswered reads, unobserved \
             writes of unknown outcome); {} configurations explored; {} violating, {} undecided",
            self.operations,
            self.keys,
            self.ignored,
            self.states_explored,
            self.violations.len(),
            self.undecided.len(),
        );
        let passed = self.passed();
        let total = self.violations.len() + self.undecided.len();
        let mut lines: Vec<String> = self
            .violations
            .into_iter()
            .map(|v| format!("{}: {}", v.key, v.explanation))
            .chain(self.undecided.into_iter().map(|u| {
                format!(
                    "{}: undecided, not a pass: {} ({} configurations, {} operations)",
                    u.key, u.reason, u.states_explored, u.operations
                )
            }))
            .take(REPORTED_KEYS)
            .collect();
        if total > REPORTED_KEYS {
            lines.push(format!("... and {} more", total - REPORTED_KEYS));
        }
        CheckResult {
            name: "linearizable".to_owned(),
            passed,
            detail,
            violations: lines,
        }
    }
}

/// Keys listed in the run report's check entry; the detail line has the counts.
pub const REPORTED_KEYS: usize = 50;

/// A key whose history has no linearization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub key: String,
    /// Operation ids: first the one that could not be linearized, then those that explain why
    /// (the write the register last held, writes of the value read, concurrent operations).
    pub operations: Vec<u64>,
    /// For an engineer: the operations with their kinds, values and times. Bounded in size.
    pub explanation: String,
}

/// A key the search could not decide within its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecided {
    pub key: String,
    /// Operations of the key that took part.
    pub operations: usize,
    pub states_explored: u64,
    pub reason: UndecidedReason,
}

/// Which part of the [`Budget`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum UndecidedReason {
    StateLimit { limit: u64 },
    CacheLimit { bytes: usize },
    Deadline,
}

impl fmt::Display for UndecidedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StateLimit { limit } => {
                write!(f, "explored more than {limit} configurations")
            }
            Self::CacheLimit { bytes } => {
                write!(f, "cache of explored configurations exceeded {bytes} bytes")
            }
            Self::Deadline => write!(f, "deadline passed"),
        }
    }
}

/// Checks every key's sub-history for linearizability against a register model.
pub fn check(ops: &[RegisterOperation], budget: &Budget) -> LinearizabilityReport {
    // BTreeMap: keys are checked and reported in a stable order.
    let mut by_key: BTreeMap<&str, Vec<&RegisterOperation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = LinearizabilityReport {
        keys: by_key.len(),
        ..LinearizabilityReport::default()
    };
    for (key, all) in by_key {
        let history = KeyHistory::new(key, all);
        report.operations += history.ops.len();
        report.ignored += history.all.len() - history.ops.len();
        if let Some(violation) = history.impossible_reads() {
            report.violations.push(violation);
            continue;
        }
        match search(&history, budget) {
            Search::Linearizable { explored } => report.states_explored += explored,
            Search::Violation { explored, stuck } => {
                report.states_explored += explored;
                report.violations.push(history.explain(stuck.as_ref()));
            }
            Search::Undecided { explored, reason } => {
                report.states_explored += explored;
                report.undecided.push(Undecided {
                    key: key.to_owned(),
                    operations: history.ops.len(),
                    states_explored: explored,
                    reason,
                });
            }
        }
    }
    report
}

/// How many operations one list in an explanation names before it says how many it left out.
const MAX_LISTED: usize = 8;
/// Values longer than this are cut in explanations.
const MAX_VALUE_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// An operation taking part in the search, its value interned to a small integer.
#[derive(Debug)]
struct KeyOp<'a> {
    src: &'a RegisterOperation,
    kind: Kind,
    value: u32,
    invoked: Micros,
    /// `None`: may take effect at any time after `invoked`, or never.
    returned: Option<Micros>,
}

impl KeyOp<'_> {
    fn end(&self) -> Micros {
        self.returned.unwrap_or(Micros::MAX)
    }

    /// Whether the intervals overlap (touching counts, as in the search).
    fn concurrent_with(&self, other: &KeyOp<'_>) -> bool {
        self.invoked <= other.end() && other.invoked <= self.end()
    }
}

/// One key's operations, ready for the search.
#[derive(Debug)]
struct KeyHistory<'a> {
    key: &'a str,
    /// Every operation on the key, including the ignored ones (explanations mention them).
    all: Vec<&'a RegisterOperation>,
    ops: Vec<KeyOp<'a>>,
    /// Interned values; 0 is "absent", the register's initial state.
    values: Vec<Option<&'a str>>,
}

impl<'a> KeyHistory<'a> {
    fn new(key: &'a str, all: Vec<&'a RegisterOperation>) -> Self {
        let mut values: Vec<Option<&'a str>> = vec![None];
        let mut interned: HashMap<&'a str, u32> = HashMap::new();
        let mut ops = Vec::with_capacity(all.len());
        for &src in &all {
            let (kind, value) = match &src.op {
                RegisterOp::Read { value } => (Kind::Read, value),
                RegisterOp::Write { value } => (Kind::Write, value),
            };
            // A completion before the invocation is a recording bug; clamping keeps the
            // interval well formed instead of ordering a return before its call.
            let completed = src.completed.map(|c| c.max(src.invoked));
            let returned = match (kind, src.outcome, completed) {
                (_, Outcome::Failed, _) => continue,
                (Kind::Read, Outcome::Ok, Some(c)) => Some(c),
                (Kind::Read, _, _) => continue,
                (Kind::Write, Outcome::Ok, Some(c)) => Some(c),
                // Unknown, or Ok without a completion time: it may still take effect after
                // the client stopped waiting, so a recorded time bounds nothing.
                (Kind::Write, _, _) => None,
            };
            let value = match value.as_deref() {
                None => 0,
                Some(v) => match interned.get(v) {
                    Some(&i) => i,
                    None => {
                        let i = u32::try_from(values.len()).unwrap_or(u32::MAX);
                        values.push(Some(v));
                        interned.insert(v, i);
                        i
                    }
                },
            };
            ops.push(KeyOp {
                src,
                kind,
                value,
                invoked: src.invoked,
                returned,
            });
        }
        // A write that may never have happened and whose value nobody read can always be left
        // out: in any linearization it is followed by a write or by nothing.
        let mut read = vec![false; values.len()];
        for op in ops.iter().filter(|op| op.kind == Kind::Read) {
            read[op.value as usize] = true;
        }
        ops.retain(|op| op.returned.is_some() || read[op.value as usize]);
        Self {
            key,
            all,
            ops,
            values,
        }
    }

    fn value(&self, value: u32) -> String {
        show_value(self.values.get(value as usize).copied().flatten())
    }

    /// Reads of a value no write could have produced (none invoked before the read returned):
    /// certain violations, found without a search that could blow the budget.
    fn impossible_reads(&self) -> Option<Violation> {
        let mut earliest_write: Vec<Option<Micros>> = vec![None; self.values.len()];
        for op in self.ops.iter().filter(|op| op.kind == Kind::Write) {
            let slot = &mut earliest_write[op.value as usize];
            *slot = Some(slot.map_or(op.invoked, |t| t.min(op.invoked)));
        }
        let mut bad: Vec<&KeyOp<'_>> = self
            .ops
            .iter()
            .filter(|op| op.kind == Kind::Read && op.value != 0)
            .filter(|op| earliest_write[op.value as usize].is_none_or(|t| t > op.end()))
            .collect();
        bad.sort_by_key(|op| (op.invoked, op.src.id));
        let (&first, others) = bad.split_first()?;

        let mut named = Named::default();
        named.add(first.src.id);
        let mut parts = vec![format!(
            "{}, a value no write could have produced",
            describe(first.src)
        )];
        let later: Vec<&RegisterOperation> = self
            .ops
            .iter()
            .filter(|op| op.kind == Kind::Write && op.value == first.value)
            .map(|op| op.src)
            .collect();
        if !later.is_empty() {
            parts.push(format!(
                "every write of it was invoked after the read returned: {}",
                named.list(&later)
            ));
        }
        let failed: Vec<&RegisterOperation> = self
            .all
            .iter()
            .copied()
            .filter(|op| op.outcome == Outcome::Failed)
            .filter(|op| matches!(&op.op, RegisterOp::Write { .. }))
            .filter(|op| value_of(op) == value_of(first.src))
            .collect();
        if !failed.is_empty() {
            parts.push(format!(
                "writes of it that failed (certainly not applied, so ignored): {}",
                named.list(&failed)
            ));
        }
        if later.is_empty() && failed.is_empty() {
            parts.push("no operation on the key wrote it".to_owned());
        }
        self.context(first, &mut named, &mut parts);
        if !others.is_empty() {
            let ids: Vec<String> = others
                .iter()
                .take(MAX_LISTED)
                .map(|op| {
                    named.add(op.src.id);
                    format!("#{}", op.src.id)
                })
                .collect();
            parts.push(format!(
                "{} other read(s) of the key have the same problem: {}{}",
                others.len(),
                ids.join(", "),
                more(others.len())
            ));
        }
        Some(Violation {
            key: self.key.to_owned(),
            operations: named.ids,
            explanation: parts.join("; "),
        })
    }

    /// Turns the deepest dead end of the search into a violation.
    fn explain(&self, stuck: Option<&Stuck>) -> Violation {
        let Some(stuck) = stuck else {
            return Violation {
                key: self.key.to_owned(),
                operations: Vec::new(),
                explanation: "no linearization exists".to_owned(),
            };
        };
        let target = &self.ops[stuck.op];
        let mut named = Named::default();
        named.add(target.src.id);
        let last_write = stuck
            .prefix
            .iter()
            .rev()
            .map(|&i| &self.ops[i])
            .find(|op| op.kind == Kind::Write);
        let mut head = format!(
            "{} cannot be linearized: the longest legal order found takes {} of the key's {} \
             operations and leaves the register at {}",
            describe(target.src),
            stuck.prefix.len(),
            self.ops.len(),
            self.value(stuck.state),
        );
        match last_write {
            Some(w) => {
                named.add(w.src.id);
                head.push_str(&format!(" (written by {})", describe(w.src)));
            }
            None => head.push_str(" (never written)"),
        }
        if !stuck.prefix.is_empty() {
            let tail: Vec<String> = stuck
                .prefix
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(|&i| format!("#{}", self.ops[i].src.id))
                .collect();
            let dots = if stuck.prefix.len() > 5 { "…, " } else { "" };
            head.push_str(&format!("; that order ends {dots}{}", tail.join(", ")));
        }
        head.push_str(&format!(
            "; no order lets #{} take effect before it returned",
            target.src.id
        ));
        let mut parts = vec![head];
        if target.kind == Kind::Read {
            let writers: Vec<&RegisterOperation> = self
                .ops
                .iter()
                .filter(|op| op.kind == Kind::Write && op.value == target.value)
                .map(|op| op.src)
                .collect();
            if writers.is_empty() {
                parts.push(
                    "no deregistration took part: the register is absent only before its first \
                     write"
                        .to_owned(),
                );
            } else {
                parts.push(format!(
                    "writes of {}: {}",
                    self.value(target.value),
                    named.list(&writers)
                ));
            }
        }
        self.context(target, &mut named, &mut parts);
        Violation {
            key: self.key.to_owned(),
            operations: named.ids,
            explanation: parts.join("; "),
        }
    }

    /// The writes an engineer looks at next: the last one acknowledged before `target` began,
    /// and everything that overlapped it.
    fn context(&self, target: &KeyOp<'_>, named: &mut Named, parts: &mut Vec<String>) {
        let acked_before = self
            .ops
            .iter()
            .filter(|op| op.kind == Kind::Write)
            .filter(|op| op.returned.is_some_and(|r| r < target.invoked))
            .max_by_key(|op| (op.end(), op.src.id));
        if let Some(w) = acked_before {
            named.add(w.src.id);
            parts.push(format!(
                "last write acknowledged before #{} was invoked: {}",
                target.src.id,
                describe(w.src)
            ));
        }
        let mut concurrent: Vec<&KeyOp<'_>> = self
            .ops
            .iter()
            .filter(|op| op.src.id != target.src.id && op.concurrent_with(target))
            .collect();
        concurrent.sort_by_key(|op| (op.invoked, op.src.id));
        if concurrent.is_empty() {
            parts.push(format!("nothing was concurrent with #{}", target.src.id));
        } else {
            let srcs: Vec<&RegisterOperation> = concurrent.iter().map(|op| op.src).collect();
            parts.push(format!(
                "concurrent with #{}: {}",
                target.src.id,
                named.list(&srcs)
            ));
        }
    }
}

fn value_of(op: &RegisterOperation) -> Option<&str> {
    match &op.op {
        RegisterOp::Read { value } | RegisterOp::Write { value } => value.as_deref(),
    }
}

/// The ids a violation names, in order, without repeats.
#[derive(Debug, Default)]
struct Named {
    ids: Vec<u64>,
}

impl Named {
    fn add(&mut self, id: u64) {
        if !self.ids.contains(&id) {
            self.ids.push(id);
        }
    }

    /// Describes up to [`MAX_LISTED`] operations, naming them, and says how many were left out.
    fn list(&mut self, ops: &[&RegisterOperation]) -> String {
        let shown: Vec<String> = ops
            .iter()
            .take(MAX_LISTED)
            .map(|op| {
                self.add(op.id);
                describe(op)
            })
            .collect();
        format!("{}{}", shown.join(", "), more(ops.len()))
    }
}

fn more(total: usize) -> String {
    if total > MAX_LISTED {
        format!(" (and {} more not listed)", total - MAX_LISTED)
    } else {
        String::new()
    }
}

/// `read #41 [t=1200..1500 µs] returned Some("w-7")`, `write #38 [t=1000..? µs, outcome
/// unknown] of None`.
fn describe(op: &RegisterOperation) -> String {
    let end = match (op.outcome, op.completed) {
        (Outcome::Ok, Some(c)) => format!("{c} µs"),
        (Outcome::Ok, None) => "? µs, acknowledged without a completion time".to_owned(),
        (Outcome::Unknown, _) => "? µs, outcome unknown".to_owned(),
        (Outcome::Failed, Some(c)) => format!("{c} µs, failed"),
        (Outcome::Failed, None) => "? µs, failed".to_owned(),
    };
    match &op.op {
        RegisterOp::Read { value } => format!(
            "read #{} [t={}..{end}] returned {}",
            op.id,
            op.invoked,
            show_value(value.as_deref())
        ),
        RegisterOp::Write { value } => format!(
            "write #{} [t={}..{end}] of {}",
            op.id,
            op.invoked,
            show_value(value.as_deref())
        ),
    }
}

fn show_value(value: Option<&str>) -> String {
    match value {
        None => "None".to_owned(),
        Some(v) if v.chars().count() > MAX_VALUE_CHARS => {
            let cut: String = v.chars().take(MAX_VALUE_CHARS).collect();
            format!("Some({cut:?}…)")
        }
        Some(v) => format!("Some({v:?})"),
    }
}

/// The deepest dead end: a legal order of `prefix` (indices into the key's operations) leaving
/// the register at `state`, which the operation `op` could not extend before its return.
#[derive(Debug)]
struct Stuck {
    op: usize,
    prefix: Vec<usize>,
    state: u32,
}

#[derive(Debug)]
enum Search {
    Linearizable {
        explored: u64,
    },
    Violation {
        explored: u64,
        stuck: Option<Stuck>,
    },
    Undecided {
        explored: u64,
        reason: UndecidedReason,
    },
}

const NIL: usize = usize::MAX;

/// The events not yet linearized, as a doubly-linked list over the sorted event array with a
/// sentinel head. Removal keeps a node's own links, so undoing removals in reverse order
/// restores the list exactly.
#[derive(Debug)]
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Events {
    fn new(len: usize) -> Self {
        let head = len;
        let mut next: Vec<usize> = (1..=len).collect();
        next.push(if len > 0 { 0 } else { NIL });
        if len > 0 {
            next[len - 1] = NIL;
        }
        let mut prev: Vec<usize> = (0..len)
            .map(|i| if i == 0 { head } else { i - 1 })
            .collect();
        prev.push(NIL);
        Self { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn remove(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn restore(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }
}

/// Hash keys are already well mixed (Zobrist), so the map uses them as they are.
#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Configurations already explored: bitsets stored back to back in one arena, chained by hash,
/// so an insertion allocates nothing per entry.
#[derive(Debug)]
struct Cache {
    words: usize,
    bits: Vec<u64>,
    states: Vec<u32>,
    /// The next entry with the same hash, or `NIL`.
    chain: Vec<usize>,
    heads: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
}

impl Cache {
    fn new(words: usize) -> Self {
        Self {
            words,
            bits: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
            heads: HashMap::default(),
        }
    }

    /// Adds the configuration; false if it was already there.
    fn insert(&mut self, set: &[u64], state: u32, hash: u64) -> bool {
        let fresh = self.states.len();
        let w = self.words;
        match self.heads.entry(hash) {
            MapEntry::Occupied(mut slot) => {
                let mut i = *slot.get();
                while i != NIL {
                    if self.states[i] == state && self.bits[i * w..(i + 1) * w] == *set {
                        return false;
                    }
                    i = self.chain[i];
                }
                self.chain.push(*slot.get());
                slot.insert(fresh);
            }
            MapEntry::Vacant(slot) => {
                slot.insert(fresh);
                self.chain.push(NIL);
            }
        }
        self.bits.extend_from_slice(set);
        self.states.push(state);
        true
    }

    fn bytes(&self) -> usize {
        self.bits.capacity() * 8
            + self.states.capacity() * 4
            + self.chain.capacity() * 8
            + self.heads.capacity() * 17
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of the order being built: the operation, the register's value before it, and
/// whether it was forced (see [`Searcher::settle`]) rather than a choice to revisit.
#[derive(Debug, Clone, Copy)]
struct Frame {
    op: usize,
    state: u32,
    forced: bool,
}

/// The memoised depth-first search of one key: the remaining events, the order built so far,
/// and the explored configurations.
#[derive(Debug)]
struct Searcher<'h, 'a> {
    h: &'h KeyHistory<'a>,
    is_call: Vec<bool>,
    op_of: Vec<usize>,
    call_of: Vec<usize>,
    return_of: Vec<usize>,
    events: Events,
    /// Random words whose xor over the linearized set is the set's hash, kept incrementally.
    zobrist: Vec<u64>,
    linearized: Vec<u64>,
    set_hash: u64,
    cache: Cache,
    /// Reads of each value not linearized yet. A value no remaining read returns is "dead":
    /// a register holding it can only be overwritten.
    reads_left: Vec<u32>,
    /// Operations that must take effect (all but unknown writes) not linearized yet.
    must_left: usize,
    state: u32,
    stack: Vec<Frame>,
    explored: u64,
}

impl<'h, 'a> Searcher<'h, 'a> {
    fn new(h: &'h KeyHistory<'a>) -> Self {
        let n = h.ops.len();
        // (time, 0 = call / 1 = return, op): calls first at equal times, see the module doc.
        let mut sorted: Vec<(Micros, u8, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in h.ops.iter().enumerate() {
            sorted.push((op.invoked, 0, i));
            if let Some(r) = op.returned {
                sorted.push((r, 1, i));
            }
        }
        sorted.sort_unstable();
        let mut call_of = vec![NIL; n];
        let mut return_of = vec![NIL; n];
        for (e, &(_, kind, op)) in sorted.iter().enumerate() {
            if kind == 0 {
                call_of[op] = e;
            } else {
                return_of[op] = e;
            }
        }
        let mut reads_left = vec![0u32; h.values.len()];
        for op in h.ops.iter().filter(|op| op.kind == Kind::Read) {
            reads_left[op.value as usize] += 1;
        }
        let words = n.div_ceil(64).max(1);
        Self {
            h,
            is_call: sorted.iter().map(|&(_, kind, _)| kind == 0).collect(),
            op_of: sorted.iter().map(|&(_, _, op)| op).collect(),
            call_of,
            return_of,
            events: Events::new(sorted.len()),
            zobrist: (0..n as u64).map(|i| splitmix64(i ^ 0x5bd1_e995)).collect(),
            linearized: vec![0; words],
            set_hash: 0,
            cache: Cache::new(words),
            reads_left,
            must_left: h.ops.iter().filter(|op| op.returned.is_some()).count(),
            state: 0,
            stack: Vec::with_capacity(n),
            explored: 0,
        }
    }

    fn dead(&self, value: u32) -> bool {
        self.reads_left[value as usize] == 0
    }

    /// Appends operation `i` (whose call is in the list) to the order.
    fn push(&mut self, i: usize, next_state: u32, forced: bool) {
        let op = &self.h.ops[i];
        self.linearized[i / 64] |= 1 << (i % 64);
        self.set_hash ^= self.zobrist[i];
        self.stack.push(Frame {
            op: i,
            state: self.state,
            forced,
        });
        self.state = next_state;
        self.events.remove(self.call_of[i]);
        if op.returned.is_some() {
            self.events.remove(self.return_of[i]);
            self.must_left -= 1;
        }
        if op.kind == Kind::Read {
            self.reads_left[op.value as usize] -= 1;
        }
    }

    /// Undoes the last [`Searcher::push`].
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let i = frame.op;
        let op = &self.h.ops[i];
        self.linearized[i / 64] &= !(1 << (i % 64));
        self.set_hash ^= self.zobrist[i];
        self.state = frame.state;
        if op.returned.is_some() {
            self.events.restore(self.return_of[i]);
            self.must_left += 1;
        }
        self.events.restore(self.call_of[i]);
        if op.kind == Kind::Read {
            self.reads_left[op.value as usize] += 1;
        }
        Some(frame)
    }

    /// Undoes the forced steps and the latest choice; the event to try next, or `None` when
    /// there is no choice left to revisit.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let frame = self.pop()?;
            if !frame.forced {
                return Some(self.events.next[self.call_of[frame.op]]);
            }
        }
    }

    /// Adds the current configuration to the cache: whether it is new, or the budget that ran
    /// out.
    fn remember(&mut self, budget: &Budget) -> Result<bool, UndecidedReason> {
        let key = self.set_hash ^ splitmix64(u64::from(self.state));
        if !self.cache.insert(&self.linearized, self.state, key) {
            return Ok(false);
        }
        self.explored += 1;
        if self.explored > budget.max_states_per_key {
            return Err(UndecidedReason::StateLimit {
                limit: budget.max_states_per_key,
            });
        }
        if self.cache.bytes() > budget.max_cache_bytes_per_key {
            return Err(UndecidedReason::CacheLimit {
                bytes: budget.max_cache_bytes_per_key,
            });
        }
        Ok(true)
    }

    /// While the register holds a dead value, appends every acknowledged write of a dead value
    /// whose call comes before the first pending return, without branching. Sound: from such a
    /// state any order must start with a write, dead writes can be dropped from the middle of
    /// an order (a write follows each), and these ones may move to the front because nothing
    /// left has returned before they were invoked. Without this, k concurrent writes nobody
    /// reads make the search try all 2^k subsets of them. Returns whether it appended any.
    fn settle(&mut self) -> bool {
        let mut forced = false;
        'again: while self.dead(self.state) {
            let mut e = self.events.first();
            while e != NIL && self.is_call[e] {
                let i = self.op_of[e];
                let op = &self.h.ops[i];
                if op.kind == Kind::Write && op.returned.is_some() && self.dead(op.value) {
                    self.push(i, op.value, true);
                    forced = true;
                    continue 'again;
                }
                e = self.events.next[e];
            }
            break;
        }
        forced
    }
}

/// The memoised depth-first search over linearization points for one key.
fn search(h: &KeyHistory<'_>, budget: &Budget) -> Search {
    let mut searcher = Searcher::new(h);
    let mut stuck = None;
    let verdict = searcher.run(budget, &mut stuck);
    let explored = searcher.explored;
    match verdict {
        Ok(true) => Search::Linearizable { explored },
        Ok(false) => Search::Violation { explored, stuck },
        Err(reason) => Search::Undecided { explored, reason },
    }
}

impl Searcher<'_, '_> {
    /// Whether a linearization exists; `best` gets the deepest dead end met on the way.
    fn run(&mut self, budget: &Budget, best: &mut Option<Stuck>) -> Result<bool, UndecidedReason> {
        // The initial value may already be dead (no read of "absent").
        if self.settle() {
            self.remember(budget)?;
        }
        let mut entry = self.events.first();
        let mut steps = 0u64;
        loop {
            if self.must_left == 0 {
                return Ok(true);
            }
            if steps.is_multiple_of(256)
                && let Some(deadline) = budget.deadline
                && Instant::now() >= deadline
            {
                return Err(UndecidedReason::Deadline);
            }
            steps += 1;

            if entry != NIL && self.is_call[entry] {
                let i = self.op_of[entry];
                let op = &self.h.ops[i];
                // An unknown write is worth placing only while some read of its value is still
                // to come: otherwise a write or nothing follows it, as if it were left out.
                let useless = op.returned.is_none() && self.dead(op.value);
                let next_state = match op.kind {
                    Kind::Write => Some(op.value),
                    Kind::Read => (self.state == op.value).then_some(self.state),
                };
                if let (false, Some(next_state)) = (useless, next_state) {
                    self.push(i, next_state, false);
                    if self.remember(budget)? {
                        if self.settle() && !self.remember(budget)? {
                            // Settled into a configuration already explored.
                            match self.backtrack() {
                                Some(next) => entry = next,
                                None => return Ok(false),
                            }
                            continue;
                        }
                        entry = self.events.first();
                        continue;
                    }
                    self.pop();
                }
                entry = self.events.next[entry];
            } else {
                // A return: that operation can no longer follow the current order. (`NIL`
                // cannot happen while an operation that must take effect is left, since its
                // return is still in the list; it is handled like a return all the same.)
                if entry != NIL
                    && best
                        .as_ref()
                        .is_none_or(|b| self.stack.len() > b.prefix.len())
                {
                    *best = Some(Stuck {
                        op: self.op_of[entry],
                        prefix: self.stack.iter().map(|f| f.op).collect(),
                        state: self.state,
                    });
                }
                match self.backtrack() {
                    Some(next) => entry = next,
                    None => return Ok(false),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    const KEY: &str = "reg-0/10.0.0.1:80";

    fn op(
        id: u64,
        key: &str,
        op: RegisterOp,
        invoked: Micros,
        completed: Option<Micros>,
        outcome: Outcome,
    ) -> RegisterOperation {
        RegisterOperation {
            id,
            client: u32::try_from(id).unwrap(),
            key: key.to_owned(),
            op,
            invoked,
            completed,
            outcome,
            replica: 0,
            version: None,
            written_at: None,
        }
    }

    fn value(v: Option<&str>) -> Option<String> {
        v.map(str::to_owned)
    }

    fn write(id: u64, v: Option<&str>, invoked: Micros, completed: Micros) -> RegisterOperation {
        let w = RegisterOp::Write { value: value(v) };
        op(id, KEY, w, invoked, Some(completed), Outcome::Ok)
    }

    fn unknown_write(id: u64, v: Option<&str>, invoked: Micros) -> RegisterOperation {
        let w = RegisterOp::Write { value: value(v) };
        op(id, KEY, w, invoked, None, Outcome::Unknown)
    }

    fn read(id: u64, v: Option<&str>, invoked: Micros, completed: Micros) -> RegisterOperation {
        let r = RegisterOp::Read { value: value(v) };
        op(id, KEY, r, invoked, Some(completed), Outcome::Ok)
    }

    fn on_key(mut o: RegisterOperation, key: &str) -> RegisterOperation {
        o.key = key.to_owned();
        o
    }

    fn run(ops: &[RegisterOperation]) -> LinearizabilityReport {
        check(ops, &Budget::default())
    }

    fn assert_passes(ops: &[RegisterOperation]) {
        let report = run(ops);
        assert!(report.passed(), "expected linearizable: {report:#?}");
    }

    /// Asserts exactly one violation, on `KEY`, naming `culprit` first; returns it.
    fn assert_violation(ops: &[RegisterOperation], culprit: u64) -> Violation {
        let report = run(ops);
        assert!(report.undecided.is_empty(), "{report:#?}");
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        let v = report.violations[0].clone();
        assert_eq!(v.key, KEY);
        assert_eq!(v.operations.first(), Some(&culprit), "{v:#?}");
        v
    }

    #[test]
    fn sequential_write_then_read_is_linearizable() {
        assert_passes(&[write(1, Some("a"), 0, 10), read(2, Some("a"), 20, 30)]);
    }

    #[test]
    fn empty_history_passes() {
        let report = run(&[]);
        assert!(report.passed());
        assert_eq!((report.keys, report.operations), (0, 0));
    }

    #[test]
    fn read_of_value_never_written_is_a_violation() {
        let v = assert_violation(
            &[write(1, Some("a"), 0, 10), read(2, Some("zz"), 20, 30)],
            2,
        );
        assert!(v.explanation.contains("read #2"), "{}", v.explanation);
        assert!(v.explanation.contains("no operation on the key wrote it"));
    }

    #[test]
    fn read_of_value_written_only_later_is_a_violation() {
        let v = assert_violation(&[read(1, Some("b"), 0, 10), write(2, Some("b"), 20, 30)], 1);
        assert!(v.operations.contains(&2));
        assert!(v.explanation.contains("invoked after the read returned"));
    }

    #[test]
    fn stale_read_is_a_violation_naming_the_read_and_the_newer_write() {
        let v = assert_violation(
            &[
                write(1, Some("a"), 0, 10),
                write(2, Some("b"), 20, 30),
                read(3, Some("a"), 40, 50),
            ],
            3,
        );
        assert!(v.operations.contains(&2), "{v:#?}");
        assert!(
            v.explanation
                .contains("written by write #2 [t=20..30 µs] of Some(\"b\")"),
            "{}",
            v.explanation
        );
        assert!(v.explanation.contains("writes of Some(\"a\"): write #1"));
    }

    #[test]
    fn concurrent_read_may_see_old_or_new_value() {
        let before = [write(1, Some("a"), 0, 10), write(2, Some("b"), 20, 40)];
        for seen in ["a", "b"] {
            let mut ops = before.to_vec();
            ops.push(read(3, Some(seen), 25, 35));
            assert_passes(&ops);
        }
        // But not the value from before the acknowledged first write.
        let mut ops = before.to_vec();
        ops.push(read(3, None, 25, 35));
        assert_violation(&ops, 3);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        // The second write was invoked in the microsecond the first was acknowledged: they
        // are unordered, so "b" may have been overwritten by "a".
        assert_passes(&[
            write(1, Some("a"), 0, 10),
            write(2, Some("b"), 10, 20),
            read(3, Some("a"), 30, 40),
        ]);
        // One microsecond later they are ordered, and the read is stale.
        assert_violation(
            &[
                write(1, Some("a"), 0, 10),
                write(2, Some("b"), 11, 20),
                read(3, Some("a"), 30, 40),
            ],
            3,
        );
    }

    #[test]
    fn unknown_write_that_is_read_later_is_linearizable() {
        assert_passes(&[
            write(1, Some("a"), 0, 10),
            unknown_write(2, Some("b"), 20),
            read(3, Some("b"), 1_000, 1_010),
            read(4, Some("b"), 2_000, 2_010),
        ]);
    }

    #[test]
    fn unknown_write_never_observed_is_linearizable() {
        let ops = [
            write(1, Some("a"), 0, 10),
            unknown_write(2, Some("b"), 20),
            read(3, Some("a"), 1_000, 1_010),
        ];
        assert_passes(&ops);
        let report = run(&ops);
        assert_eq!((report.operations, report.ignored), (2, 1));
    }

    /// A write whose client timed out may take effect at any time after its invocation, even
    /// after a later write was acknowledged: to explain the last read it must be assumed to
    /// have happened, late.
    #[test]
    fn unknown_write_may_take_effect_after_a_later_acknowledged_write() {
        assert_passes(&[
            write(1, Some("a"), 0, 10),
            unknown_write(2, Some("b"), 20),
            write(3, Some("c"), 100, 110),
            read(4, Some("c"), 200, 210),
            read(5, Some("b"), 300, 310),
        ]);
    }

    /// A write whose client timed out may also never take effect: a read of the older value
    /// long after it is explained by assuming it did not happen. Had the write been
    /// acknowledged, the same read would be a violation.
    #[test]
    fn unknown_write_must_be_assumed_not_to_have_happened() {
        let never = [
            write(1, Some("a"), 0, 10),
            unknown_write(2, Some("b"), 20),
            read(3, Some("a"), 5_000, 5_010),
        ];
        assert_passes(&never);
        let mut acknowledged = never.clone();
        acknowledged[1] = write(2, Some("b"), 20, 30);
        assert_violation(&acknowledged, 3);
    }

    #[test]
    fn ok_write_without_completion_is_treated_as_unknown() {
        let mut w = write(2, Some("b"), 20, 0);
        w.completed = None;
        assert_passes(&[
            write(1, Some("a"), 0, 10),
            w,
            read(3, Some("a"), 1_000, 1_010),
        ]);
    }

    #[test]
    fn unknown_write_observed_then_older_value_again_is_a_violation() {
        let v = assert_violation(
            &[
                write(1, Some("a"), 0, 10),
                unknown_write(2, Some("b"), 20),
                read(3, Some("b"), 100, 110),
                read(4, Some("a"), 200, 210),
            ],
            4,
        );
        assert!(
            v.explanation.contains("outcome unknown"),
            "{}",
            v.explanation
        );
    }

    #[test]
    fn only_the_violating_key_is_reported() {
        let other = "reg-1/10.0.0.2:80";
        let ops = [
            on_key(write(1, Some("a"), 0, 10), other),
            write(2, Some("x"), 0, 10),
            on_key(read(3, Some("a"), 20, 30), other),
            write(4, Some("y"), 20, 30),
            read(5, Some("x"), 40, 50),
        ];
        let report = run(&ops);
        assert_eq!(report.keys, 2);
        assert_eq!(report.operations, 5);
        assert_eq!(report.violations.len(), 1, "{report:#?}");
        assert_eq!(report.violations[0].key, KEY);
        assert_eq!(report.violations[0].operations[0], 5);
        assert!(!report.violations[0].operations.contains(&3));
    }

    #[test]
    fn failed_operations_are_ignored() {
        let failed = op(
            2,
            KEY,
            RegisterOp::Write {
                value: value(Some("b")),
            },
            20,
            Some(30),
            Outcome::Failed,
        );
        let v = assert_violation(
            &[
                write(1, Some("a"), 0, 10),
                failed,
                read(3, Some("b"), 40, 50),
            ],
            3,
        );
        assert!(v.operations.contains(&2));
        assert!(v.explanation.contains("failed"), "{}", v.explanation);

        // Reads that did not succeed say nothing, whatever they carry.
        let junk_read = |id, outcome| {
            let r = RegisterOp::Read {
                value: value(Some("junk")),
            };
            op(id, KEY, r, 20, Some(30), outcome)
        };
        let ops = [
            write(1, Some("a"), 0, 10),
            junk_read(2, Outcome::Failed),
            junk_read(3, Outcome::Unknown),
            read(4, Some("a"), 40, 50),
        ];
        assert_passes(&ops);
        assert_eq!(run(&ops).ignored, 2);
    }

    #[test]
    fn deregistration_and_initial_absence() {
        assert_passes(&[
            write(1, Some("a"), 0, 10),
            write(2, None, 20, 30),
            read(3, None, 40, 50),
        ]);
        assert_passes(&[read(1, None, 0, 10), write(2, Some("a"), 20, 30)]);
        assert_violation(
            &[
                write(1, Some("a"), 0, 10),
                write(2, None, 20, 30),
                read(3, Some("a"), 40, 50),
            ],
            3,
        );
    }

    /// Twelve writes of unknown outcome, concurrent with everything after them, each read later
    /// in turn, then a read of the first value again: a violation, but finding it means trying
    /// many subsets of the writes.
    fn hard_history() -> Vec<RegisterOperation> {
        let names: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
        let mut ops = Vec::new();
        for (i, name) in names.iter().enumerate() {
            ops.push(unknown_write(i as u64, Some(name), i as u64));
        }
        for (i, name) in names.iter().enumerate() {
            let t = 1_000 + 100 * i as u64;
            ops.push(read(100 + i as u64, Some(name), t, t + 10));
        }
        ops.push(read(200, Some("v0"), 5_000, 5_010));
        ops
    }

    #[test]
    fn exhausted_budget_is_undecided_not_passed() {
        let ops = hard_history();
        let tiny = Budget {
            max_states_per_key: 5,
            ..Budget::default()
        };
        let report = check(&ops, &tiny);
        assert!(!report.passed());
        assert!(report.violations.is_empty(), "{report:#?}");
        assert_eq!(report.undecided.len(), 1);
        assert_eq!(report.undecided[0].key, KEY);
        assert_eq!(
            report.undecided[0].reason,
            UndecidedReason::StateLimit { limit: 5 }
        );

        let tiny_cache = Budget {
            max_cache_bytes_per_key: 16,
            ..Budget::default()
        };
        let report = check(&ops, &tiny_cache);
        assert!(matches!(
            report.undecided[..],
            [Undecided {
                reason: UndecidedReason::CacheLimit { .. },
                ..
            }]
        ));

        let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap();
        let report = check(&ops, &Budget::until(past));
        assert_eq!(report.undecided.len(), 1);
        assert_eq!(report.undecided[0].reason, UndecidedReason::Deadline);

        // With room to search, the same history is decided.
        let report = run(&ops);
        assert!(report.undecided.is_empty(), "{report:#?}");
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].operations[0], 200);
    }

    #[test]
    fn check_result_fails_on_violations_and_undecided_keys() {
        let fine = run(&[write(1, Some("a"), 0, 10)]).into_check_result();
        assert!(fine.passed && fine.violations.is_empty(), "{fine:#?}");
        assert_eq!(fine.name, "linearizable");

        let stale = [
            write(1, Some("a"), 0, 10),
            write(2, Some("b"), 20, 30),
            read(3, Some("a"), 40, 50),
        ];
        let failed = run(&stale).into_check_result();
        assert!(!failed.passed);
        assert_eq!(failed.violations.len(), 1);
        assert!(failed.violations[0].starts_with(KEY), "{failed:#?}");
        assert!(failed.violations[0].contains("read #3"));

        let undecided = check(&hard_history(), &Budget::states_per_key(5)).into_check_result();
        assert!(!undecided.passed);
        assert!(
            undecided.violations[0].contains("undecided"),
            "{undecided:#?}"
        );
    }

    #[test]
    fn explanations_stay_bounded() {
        // Many concurrent writes around the stale read: the lists are capped.
        let mut ops = vec![write(1, Some("a"), 0, 10), write(2, Some("b"), 20, 30)];
        for i in 0..50 {
            ops.push(write(10 + i, Some(&format!("c{i}")), 35, 100_000));
        }
        ops.push(read(3, Some("a"), 40, 50));
        let v = assert_violation(&ops, 3);
        assert!(
            v.explanation.contains("more not listed"),
            "{}",
            v.explanation
        );
        assert!(v.operations.len() <= 4 * MAX_LISTED, "{v:#?}");
        assert!(v.explanation.len() < 4_000, "{}", v.explanation.len());
    }

    /// A history of random concurrent clients on a few registers, linearizable by construction:
    /// every operation that takes effect does so at a point inside its interval, and reads
    /// return what the register held at their point.
    fn random_history(seed: u64) -> Vec<RegisterOperation> {
        let keys = ["reg-0/a:1", "reg-1/b:1", "reg-2/c:1"];
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ops = Vec::new();
        // (linearization point, index in ops) of everything that took effect.
        let mut points: Vec<(Micros, usize)> = Vec::new();
        let mut next_id = 0u64;
        for client in 0..6u32 {
            let mut t: Micros = rng.random_range(0..50);
            for n in 0..60 {
                let key = keys[rng.random_range(0..keys.len())];
                let invoked = t + rng.random_range(1..30);
                let point = invoked + rng.random_range(0..40);
                let done = point + rng.random_range(0..40);
                let roll: f64 = rng.random();
                let outcome = if roll < 0.8 {
                    Outcome::Ok
                } else if roll < 0.9 {
                    Outcome::Unknown
                } else {
                    Outcome::Failed
                };
                let kind = if rng.random_bool(0.4) {
                    let v = (!rng.random_bool(0.15)).then(|| format!("c{client}-{n}"));
                    RegisterOp::Write { value: v }
                } else {
                    // Filled in below for successful reads; junk otherwise (it must be ignored).
                    RegisterOp::Read {
                        value: Some("junk".to_owned()),
                    }
                };
                let write = matches!(kind, RegisterOp::Write { .. });
                let took_effect = match outcome {
                    Outcome::Ok => true,
                    Outcome::Unknown => write && rng.random_bool(0.5),
                    Outcome::Failed => false,
                };
                let completed = match (write, outcome) {
                    (true, Outcome::Unknown) => None,
                    _ => Some(done),
                };
                if took_effect {
                    points.push((point, ops.len()));
                }
                ops.push(RegisterOperation {
                    id: next_id,
                    client,
                    key: key.to_owned(),
                    op: kind,
                    invoked,
                    completed,
                    outcome,
                    replica: 0,
                    version: None,
                    written_at: None,
                });
                next_id += 1;
                t = done;
            }
        }
        points.sort_unstable();
        let mut registers: HashMap<String, Option<String>> = HashMap::new();
        for (_, i) in points {
            let o = &mut ops[i];
            let register = registers.entry(o.key.clone()).or_default();
            match &mut o.op {
                RegisterOp::Write { value } => register.clone_from(value),
                RegisterOp::Read { value } => value.clone_from(register),
            }
        }
        ops
    }

    #[test]
    fn random_linearizable_histories_pass_and_corrupted_ones_fail() {
        for seed in 1..=4 {
            let mut ops = random_history(seed);
            let report = run(&ops);
            assert!(report.passed(), "seed {seed}: {report:#?}");
            assert_eq!(report.keys, 3);
            assert!(report.operations > 200, "seed {seed}: {report:#?}");

            // A read of a value nobody wrote.
            let reads: Vec<usize> = (0..ops.len())
                .filter(|&i| {
                    ops[i].outcome == Outcome::Ok && matches!(ops[i].op, RegisterOp::Read { .. })
                })
                .collect();
            let victim = reads[reads.len() / 2];
            let id = ops[victim].id;
            let original = ops[victim].op.clone();
            ops[victim].op = RegisterOp::Read {
                value: Some("never-written".to_owned()),
            };
            let report = run(&ops);
            assert_eq!(report.violations.len(), 1, "seed {seed}: {report:#?}");
            assert_eq!(report.violations[0].key, ops[victim].key);
            assert_eq!(report.violations[0].operations[0], id);
            ops[victim].op = original;

            // A certainly stale read: a read made to return the value of a write that was
            // overwritten (by a write of another value) entirely before the read began.
            let (r, w_old) = stale_candidate(&ops).expect("a stale-read candidate");
            let stale = ops[w_old].op.clone();
            if let RegisterOp::Write { value } = stale {
                ops[r].op = RegisterOp::Read { value };
            }
            let report = run(&ops);
            assert!(report.undecided.is_empty(), "seed {seed}: {report:#?}");
            assert_eq!(report.violations.len(), 1, "seed {seed}: {report:#?}");
            assert_eq!(report.violations[0].key, ops[r].key);
            assert_eq!(report.violations[0].operations[0], ops[r].id, "{report:#?}");
        }
    }

    /// (read, old write): Ok write `old` of a unique value, an Ok write of another value
    /// invoked after `old` was acknowledged and acknowledged before the Ok read began.
    fn stale_candidate(ops: &[RegisterOperation]) -> Option<(usize, usize)> {
        let acked_write = |o: &RegisterOperation| {
            o.outcome == Outcome::Ok && matches!(o.op, RegisterOp::Write { .. })
        };
        let written = |o: &RegisterOperation| match &o.op {
            RegisterOp::Write { value } => value.clone(),
            RegisterOp::Read { .. } => None,
        };
        for (r, read) in ops.iter().enumerate() {
            if read.outcome != Outcome::Ok || !matches!(read.op, RegisterOp::Read { .. }) {
                continue;
            }
            for old in (0..ops.len()).filter(|&i| acked_write(&ops[i]) && ops[i].key == read.key) {
                let Some(old_value) = written(&ops[old]) else {
                    continue;
                };
                let old_done = ops[old].completed.unwrap();
                let overwritten = ops.iter().any(|w| {
                    acked_write(w)
                        && w.key == read.key
                        && written(w) != Some(old_value.clone())
                        && w.invoked > old_done
                        && w.completed.unwrap() < read.invoked
                });
                if overwritten {
                    return Some((r, old));
                }
            }
        }
        None
    }

    /// The definition, by brute force: some order of the operations that take part, respecting
    /// real time (an operation may go first unless another one left returned before it was
    /// invoked), legal for the register, with every write of unknown outcome placed or dropped.
    fn brute_force(ops: &[RegisterOperation]) -> bool {
        let taking_part: Vec<&RegisterOperation> = ops
            .iter()
            .filter(|o| match (&o.op, o.outcome) {
                (_, Outcome::Failed) => false,
                (RegisterOp::Read { .. }, Outcome::Ok) => o.completed.is_some(),
                (RegisterOp::Read { .. }, _) => false,
                (RegisterOp::Write { .. }, _) => true,
            })
            .collect();
        let must_return = |o: &RegisterOperation| match o.outcome {
            Outcome::Ok => o.completed,
            _ => None,
        };
        fn go(
            left: &mut Vec<&RegisterOperation>,
            state: Option<String>,
            must_return: &dyn Fn(&RegisterOperation) -> Option<Micros>,
        ) -> bool {
            if left.iter().all(|o| must_return(o).is_none()) {
                return true;
            }
            for k in 0..left.len() {
                let o = left[k];
                let blocked = left
                    .iter()
                    .any(|p| must_return(p).is_some_and(|r| r < o.invoked));
                if blocked {
                    continue;
                }
                let next = match &o.op {
                    RegisterOp::Write { value } => value.clone(),
                    RegisterOp::Read { value } if *value == state => state.clone(),
                    RegisterOp::Read { .. } => continue,
                };
                left.remove(k);
                let found = go(left, next, must_return);
                left.insert(k, o);
                if found {
                    return true;
                }
            }
            false
        }
        go(&mut taking_part.clone(), None, &must_return)
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = StdRng::seed_from_u64(7);
        let values = [None, Some("a"), Some("b"), Some("c")];
        let (mut linearizable, mut not) = (0, 0);
        for round in 0..3_000 {
            let n = rng.random_range(1..=9);
            let ops: Vec<RegisterOperation> = (0..n)
                .map(|id| {
                    let v = values[rng.random_range(0..values.len())];
                    let invoked = rng.random_range(0..20);
                    let completed = invoked + rng.random_range(0..25);
                    let roll: f64 = rng.random();
                    let (kind, outcome) = if rng.random_bool(0.5) {
                        let outcome = if roll < 0.7 {
                            Outcome::Ok
                        } else if roll < 0.9 {
                            Outcome::Unknown
                        } else {
                            Outcome::Failed
                        };
                        (RegisterOp::Write { value: value(v) }, outcome)
                    } else {
                        let outcome = if roll < 0.9 {
                            Outcome::Ok
                        } else {
                            Outcome::Failed
                        };
                        (RegisterOp::Read { value: value(v) }, outcome)
                    };
                    let completed = (outcome != Outcome::Unknown).then_some(completed);
                    op(id, KEY, kind, invoked, completed, outcome)
                })
                .collect();
            let expected = brute_force(&ops);
            let report = run(&ops);
            assert!(report.undecided.is_empty());
            assert_eq!(
                report.passed(),
                expected,
                "round {round}: {ops:#?}\n{report:#?}"
            );
            if expected {
                linearizable += 1;
            } else {
                not += 1;
                assert!(!report.violations[0].operations.is_empty());
            }
        }
        // The generator exercises both verdicts.
        assert!(linearizable > 600 && not > 600, "{linearizable} / {not}");
    }
}
