//! A model of iptables tables as `iptables-save` prints them, and a small interpreter of
//! `iptables-restore --noflush` input over that model.
//!
//! The runner parses the current state with it (which jumps and chains exist); tests use the
//! interpreter to check, without a kernel, that applying is idempotent and that cleanup gives
//! back the table it started from. Rules are kept as the text iptables-save prints: Netting
//! writes its rules in that same canonical form, so presence checks are text comparisons.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// All tables of one save, by name (`nat`, `filter`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    tables: BTreeMap<String, Table>,
}

/// One table: its chains by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    chains: BTreeMap<String, Chain>,
}

/// One chain: a policy for built-in chains (`ACCEPT`), none for user chains, and its rules in
/// order, each without the leading `-A CHAIN `.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// `Some(policy)` for a built-in chain.
    pub policy: Option<String>,
    /// The rule specifications, in order.
    pub rules: Vec<String>,
}

/// Input that `iptables-restore --noflush` would reject, as far as this model can tell.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct RestoreError {
    /// 1-based line of the input.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Tables {
    /// Parses `iptables-save` output (comments, counters and blank lines are ignored).
    pub fn parse(save: &str) -> Result<Self, RestoreError> {
        Self::default().interpret(save, false)
    }

    /// What the tables would be after `iptables-restore --noflush` of `input`. Each
    /// `*table ... COMMIT` block is all-or-nothing, like the real tool's transactions.
    /// A rule that jumps to an upper-case name that is neither a chain of the table nor a
    /// common target is rejected, as the real tool rejects a jump to a missing chain.
    pub fn restore(&self, input: &str) -> Result<Self, RestoreError> {
        self.interpret(input, true)
    }

    fn interpret(&self, input: &str, strict: bool) -> Result<Self, RestoreError> {
        let mut out = self.clone();
        let mut open: Option<(String, Table)> = None;
        for (index, raw) in input.lines().enumerate() {
            let line = raw.trim();
            let err = |message: String| RestoreError {
                line: index + 1,
                message,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open.is_some() {
                    return Err(err("table opened before COMMIT".to_owned()));
                }
                let table = out.tables.get(name).cloned().unwrap_or_default();
                open = Some((name.to_owned(), table));
                continue;
            }
            let Some((name, table)) = open.as_mut() else {
                return Err(err(format!("`{line}` outside a table")));
            };
            if line == "COMMIT" {
                out.tables.insert(name.clone(), std::mem::take(table));
                open = None;
                continue;
            }
            table.execute(line, strict).map_err(err)?;
        }
        if open.is_some() {
            return Err(RestoreError {
                line: input.lines().count(),
                message: "missing COMMIT".to_owned(),
            });
        }
        Ok(out)
    }

    /// The table called `name`, if the save had it.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    /// The nat table, or an empty one.
    pub fn nat(&self) -> Table {
        self.tables.get("nat").cloned().unwrap_or_default()
    }

    /// Number of rules in all tables.
    pub fn rule_count(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.chains.values())
            .map(|c| c.rules.len())
            .sum()
    }

    /// The same tables without those that hold nothing (only built-in chains, policy
    /// `ACCEPT`, no rules). Such a table behaves exactly as an absent one; whether it is
    /// listed depends on the back end and on who looked at it (the legacy tool creates a
    /// table by reading it), so comparisons of state ignore it.
    pub fn without_empty(&self) -> Self {
        Self {
            tables: self
                .tables
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
        }
    }
}

impl Table {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.get(name)
    }

    /// All chains, by name.
    pub fn chains(&self) -> impl Iterator<Item = (&str, &Chain)> {
        self.chains.iter().map(|(n, c)| (n.as_str(), c))
    }

    /// Only built-in chains with policy `ACCEPT` and no rules.
    pub fn is_empty(&self) -> bool {
        self.chains
            .values()
            .all(|c| c.policy.as_deref() == Some("ACCEPT") && c.rules.is_empty())
    }

    fn is_referenced(&self, chain: &str) -> bool {
        self.chains
            .values()
            .flat_map(|c| c.rules.iter())
            .any(|r| rule_target(r) == Some(chain))
    }

    fn execute(&mut self, line: &str, strict: bool) -> Result<(), String> {
        if let Some(decl) = line.strip_prefix(':') {
            // `:NAME POLICY [pkts:bytes]`. With --noflush a user chain is created or flushed;
            // a built-in chain only gets its policy set.
            let mut parts = decl.split_whitespace();
            let (Some(name), Some(policy)) = (parts.next(), parts.next()) else {
                return Err(format!("bad chain declaration `{line}`"));
            };
            let chain = self.chains.entry(name.to_owned()).or_default();
            if policy == "-" {
                if chain.policy.is_some() {
                    return Err(format!("`{name}` is a built-in chain"));
                }
                chain.rules.clear();
            } else {
                chain.policy = Some(policy.to_owned());
            }
            return Ok(());
        }
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (chain_name, spec) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
        let spec = spec.trim();
        if chain_name.is_empty() {
            return Err(format!("`{line}` names no chain"));
        }
        let exists = self.chains.contains_key(chain_name);
        match command {
            "-A" | "-D" => {
                if strict
                    && let Some(target) = rule_target(spec)
                    && target.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && !self.chains.contains_key(target)
                    && !BUILTIN_TARGETS.contains(&target)
                {
                    return Err(format!("chain `{target}` does not exist"));
                }
                let Some(chain) = self.chains.get_mut(chain_name) else {
                    return Err(format!("chain `{chain_name}` does not exist"));
                };
                if command == "-A" {
                    chain.rules.push(spec.to_owned());
                } else {
                    let Some(at) = chain.rules.iter().position(|r| r == spec) else {
                        return Err(format!("no rule `{spec}` in `{chain_name}` to delete"));
                    };
                    chain.rules.remove(at);
                }
            }
            "-N" if !exists => {
                self.chains.insert(chain_name.to_owned(), Chain::default());
            }
            "-F" if exists => {
                if let Some(chain) = self.chains.get_mut(chain_name) {
                    chain.rules.clear();
                }
            }
            "-X" if exists => {
                let chain = &self.chains[chain_name];
                if chain.policy.is_some() {
                    return Err(format!("cannot delete built-in chain `{chain_name}`"));
                }
                if !chain.rules.is_empty() {
                    return Err(format!("chain `{chain_name}` is not empty"));
                }
                if self.is_referenced(chain_name) {
                    return Err(format!("chain `{chain_name}` is still referenced"));
                }
                self.chains.remove(chain_name);
            }
            "-N" => return Err(format!("chain `{chain_name}` already exists")),
            "-F" | "-X" => return Err(format!("chain `{chain_name}` does not exist")),
            other => return Err(format!("command `{other}` is not modelled")),
        }
        Ok(())
    }
}

/// Targets that are not chains of the table (upper-case, so they look like chain names).
const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REDIRECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "CONNMARK",
    "LOG",
    "REJECT",
    "TPROXY",
    "NETMAP",
    "CT",
    "NOTRACK",
    "TCPMSS",
];

/// The target of a rule specification: the word after `-j`/`-g` (`--jump`/`--goto`).
pub fn rule_target(spec: &str) -> Option<&str> {
    let mut words = spec.split_whitespace();
    while let Some(w) = words.next() {
        if matches!(w, "-j" | "-g" | "--jump" | "--goto") {
            return words.next();
        }
    }
    None
}

/// Canonical save-like text: tables by name, built-in chains first in the kernel's order,
/// user chains by name, counters zeroed. Used in test failure messages.
impl fmt::Display for Tables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ORDER: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
        for (name, table) in &self.tables {
            writeln!(f, "*{name}")?;
            let mut chains: Vec<(&String, &Chain)> = table.chains.iter().collect();
            chains.sort_by_key(|(n, c)| {
                let rank = ORDER.iter().position(|o| o == n).unwrap_or(ORDER.len());
                (c.policy.is_none(), rank, n.as_str())
            });
            for (n, c) in &chains {
                writeln!(f, ":{n} {} [0:0]", c.policy.as_deref().unwrap_or("-"))?;
            }
            for (n, c) in &chains {
                for r in &c.rules {
                    writeln!(f, "-A {n} {r}")?;
                }
            }
            writeln!(f, "COMMIT")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
