//! The shell around rule generation: choose the back end, read the current nat tables, and
//! apply (or print) one transaction per address family.

use std::io::Write;

use thiserror::Error;
use tracing::{debug, info, warn};

use crate::config::{Action, Config, Invocation};
use crate::rules::{self, RuleSet};
use crate::table::{RestoreError, Table, Tables};
use crate::xtables::{Backend, Family, RESTORE_ARGS, ToolError, Xtables, binary_name};

/// A failure after the configuration was accepted.
#[derive(Debug, Error)]
pub enum RunError {
    /// Neither back end's tools work.
    #[error("no usable iptables back end: nft: {nft}; legacy: {legacy}")]
    NoBackend {
        /// Why nft is not usable.
        nft: ToolError,
        /// Why legacy is not usable.
        legacy: ToolError,
    },
    /// Reading the current rules failed.
    #[error("reading the current {} rules ({backend}): {source}", family.tool())]
    Read {
        /// The back end.
        backend: Backend,
        /// The family.
        family: Family,
        /// Why.
        source: ToolError,
    },
    /// The save output could not be understood.
    #[error("understanding {} output: {source}", binary_name(*backend, *family, "save"))]
    Parse {
        /// The back end.
        backend: Backend,
        /// The family.
        family: Family,
        /// Why.
        source: RestoreError,
    },
    /// The transaction was refused (nothing of it was applied).
    #[error("{what} the {} rules ({backend}) failed, the table is unchanged: {source}", family.tool())]
    Restore {
        /// `checking`, `applying` or `removing`.
        what: &'static str,
        /// The back end.
        backend: Backend,
        /// The family.
        family: Family,
        /// Why.
        source: ToolError,
    },
    /// Writing the dry-run output failed.
    #[error("writing the rules to stdout: {0}")]
    Output(#[from] std::io::Error),
}

/// Carries out `invocation` through `xtables`; a dry run writes the restore input to `out`
/// and changes nothing.
pub fn run(
    invocation: &Invocation,
    xtables: &dyn Xtables,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    match &invocation.action {
        Action::Apply(config) => apply(config, invocation, xtables, out),
        Action::Cleanup { ipv6 } => cleanup(*ipv6, invocation, xtables, out),
    }
}

/// Picks the back end like the Kubernetes iptables wrappers do: the one that already holds
/// more rules (IPv4 and IPv6 together) is the one the rest of the node uses, since two back
/// ends would hide each other's rules from their tools; with no rules in either (a fresh pod
/// namespace) or a tie, nft, the default of current distributions. A back end whose IPv4
/// save fails is unusable.
pub fn detect_backend(xtables: &dyn Xtables) -> Result<Backend, RunError> {
    let count = |backend| -> Result<usize, ToolError> {
        let mut rules = count_rules(&xtables.save(backend, Family::V4)?);
        match xtables.save(backend, Family::V6) {
            Ok(v6) => rules += count_rules(&v6),
            Err(e) => debug!(%backend, error = %e, "ip6tables not readable; counting IPv4 only"),
        }
        Ok(rules)
    };
    let backend = match (count(Backend::Nft), count(Backend::Legacy)) {
        (Ok(nft), Ok(legacy)) => {
            let chosen = if legacy > nft {
                Backend::Legacy
            } else {
                Backend::Nft
            };
            info!(nft_rules = nft, legacy_rules = legacy, backend = %chosen, "detected iptables back end");
            chosen
        }
        (Ok(_), Err(e)) => {
            info!(legacy_error = %e, backend = "nft", "legacy back end unusable");
            Backend::Nft
        }
        (Err(e), Ok(_)) => {
            info!(nft_error = %e, backend = "legacy", "nft back end unusable");
            Backend::Legacy
        }
        (Err(nft), Err(legacy)) => return Err(RunError::NoBackend { nft, legacy }),
    };
    Ok(backend)
}

fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// The nat table of `backend` and `family` as it is now.
pub fn read_nat(
    xtables: &dyn Xtables,
    backend: Backend,
    family: Family,
) -> Result<Table, RunError> {
    let text = xtables
        .save(backend, family)
        .map_err(|source| RunError::Read {
            backend,
            family,
            source,
        })?;
    let tables = Tables::parse(&text).map_err(|source| RunError::Parse {
        backend,
        family,
        source,
    })?;
    Ok(tables.nat())
}

/// The comment a dry run prints before each transaction: the command that would read it.
fn dry_run_header(backend: Backend, family: Family) -> String {
    format!(
        "# {} {}\n",
        binary_name(backend, family, "restore"),
        RESTORE_ARGS.join(" ")
    )
}

fn apply(
    config: &Config,
    invocation: &Invocation,
    xtables: &dyn Xtables,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let dry_run = invocation.dry_run;
    let backend = match invocation.backend.forced() {
        Some(backend) => backend,
        None => match detect_backend(xtables) {
            Ok(backend) => backend,
            // A dry run is also how an operator looks at the rules away from a pod (without
            // privileges): the text is the same for both back ends.
            Err(e) if dry_run => {
                warn!(error = %e, "cannot detect the back end; showing nft");
                Backend::Nft
            }
            Err(e) => return Err(e),
        },
    };
    let mut plans: Vec<(RuleSet, Table)> = Vec::new();
    for family in config.families() {
        let current = match read_nat(xtables, backend, family) {
            Ok(table) => table,
            Err(e) if dry_run => {
                warn!(error = %e, "cannot read the current rules; showing the rules for an empty table");
                Table::default()
            }
            Err(e) => return Err(e),
        };
        plans.push((rules::rules(config, family), current));
    }

    if dry_run {
        for (ruleset, current) in &plans {
            out.write_all(dry_run_header(backend, ruleset.family).as_bytes())?;
            out.write_all(ruleset.restore_input(current).as_bytes())?;
        }
        out.flush()?;
        return Ok(());
    }

    // Each family is one transaction. With IPv6 there are two, so both are checked before
    // either is committed, and if the second still fails to commit the first is removed
    // again: the pod is never left redirecting one family and not the other.
    for (ruleset, current) in &plans {
        let family = ruleset.family;
        xtables
            .restore(backend, family, &ruleset.restore_input(current), true)
            .map_err(|source| RunError::Restore {
                what: "checking",
                backend,
                family,
                source,
            })?;
    }
    let mut committed = Vec::new();
    for (ruleset, current) in &plans {
        if let Err(e) = commit(xtables, backend, ruleset, current) {
            for family in committed {
                roll_back(xtables, backend, family);
            }
            return Err(e);
        }
        info!(%backend, family = ruleset.family.tool(), "redirection installed");
        committed.push(ruleset.family);
    }
    Ok(())
}

/// Commits one family's transaction. If it fails and the table has changed since it was read
/// (another writer: the transaction's deletes no longer match), it is rebuilt from a fresh
/// read and tried once more; a failure on an unchanged table is returned as it is.
fn commit(
    xtables: &dyn Xtables,
    backend: Backend,
    ruleset: &RuleSet,
    current: &Table,
) -> Result<(), RunError> {
    let family = ruleset.family;
    let restore = |input: &str| {
        xtables
            .restore(backend, family, input, false)
            .map_err(|source| RunError::Restore {
                what: "applying",
                backend,
                family,
                source,
            })
    };
    let input = ruleset.restore_input(current);
    let Err(first) = restore(&input) else {
        return Ok(());
    };
    let now = read_nat(xtables, backend, family)?;
    let again = ruleset.restore_input(&now);
    if again == input {
        return Err(first);
    }
    warn!(error = %first, family = family.tool(), "nat table changed while applying; retrying once");
    restore(&again)
}

fn roll_back(xtables: &dyn Xtables, backend: Backend, family: Family) {
    let result =
        read_nat(xtables, backend, family).and_then(|table| match rules::cleanup(&table).input {
            Some(input) => xtables
                .restore(backend, family, &input, false)
                .map_err(|source| RunError::Restore {
                    what: "removing",
                    backend,
                    family,
                    source,
                }),
            None => Ok(()),
        });
    match result {
        Ok(()) => warn!(
            family = family.tool(),
            "rolled back the rules already applied"
        ),
        Err(e) => warn!(family = family.tool(), error = %e, "rolling back failed; run --cleanup"),
    }
}

/// Removes Netting's chains from the chosen back end, or from every readable one with `auto`
/// (the rules may have been applied with another choice). IPv4 always; IPv6 too, where
/// failing to read ip6tables is an error only when `--ipv6` was given.
fn cleanup(
    ipv6: bool,
    invocation: &Invocation,
    xtables: &dyn Xtables,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let forced = invocation.backend.forced();
    let backends = match forced {
        Some(backend) => vec![backend],
        None => vec![Backend::Nft, Backend::Legacy],
    };
    let mut tables = Vec::new();
    let mut unusable = Vec::new();
    for backend in backends {
        match read_nat(xtables, backend, Family::V4) {
            Ok(table) => tables.push((backend, Family::V4, table)),
            Err(RunError::Read { source, .. }) if forced.is_none() => {
                debug!(%backend, error = %source, "back end unusable; nothing to clean there");
                unusable.push(source);
                continue;
            }
            Err(e) => return Err(e),
        }
        match read_nat(xtables, backend, Family::V6) {
            Ok(table) => tables.push((backend, Family::V6, table)),
            Err(e) if ipv6 => return Err(e),
            Err(e) => debug!(%backend, error = %e, "ip6tables not readable; skipping IPv6"),
        }
    }
    if tables.is_empty()
        && let (Some(legacy), Some(nft)) = (unusable.pop(), unusable.pop())
    {
        return Err(RunError::NoBackend { nft, legacy });
    }

    for (backend, family, table) in tables {
        let plan = rules::cleanup(&table);
        for (chain, rule) in &plan.jumps {
            if table.chain(chain).is_some_and(|c| c.policy.is_some()) {
                info!(%backend, family = family.tool(), chain, rule, "removing jump");
            } else {
                warn!(%backend, family = family.tool(), chain, rule, "removing another chain's rule that jumps to a Netting chain");
            }
        }
        let Some(input) = plan.input else {
            info!(%backend, family = family.tool(), "nothing of Netting's to remove");
            continue;
        };
        if invocation.dry_run {
            out.write_all(dry_run_header(backend, family).as_bytes())?;
            out.write_all(input.as_bytes())?;
            continue;
        }
        xtables
            .restore(backend, family, &input, false)
            .map_err(|source| RunError::Restore {
                what: "removing",
                backend,
                family,
                source,
            })?;
        info!(%backend, family = family.tool(), chains = ?plan.chains, "removed Netting's chains");
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
