//! Rule generation against the golden files in `tests/golden/`. After an intended change,
//! regenerate them with `NETTING_UPDATE_GOLDEN=1 cargo test -p netting-init --test golden` and
//! review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use netting_init::rules::{cleanup, rules};
use netting_init::{Family, Tables};
use support::{CASES, EMPTY_NAT, case_config, golden_dir, golden_path};

fn updating() -> bool {
    std::env::var("NETTING_UPDATE_GOLDEN").as_deref() == Ok("1")
}

/// Compares `actual` with the golden file `name`.`family`, or rewrites it when updating.
/// Returns the file name.
fn check(name: &str, family: Family, actual: &str, failures: &mut Vec<String>) -> String {
    let path = golden_path(name, family);
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    if updating() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return file;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{file} differs.\n--- expected\n{expected}--- actual\n{actual}"
        )),
        Err(e) => failures.push(format!("{file}: {e}")),
    }
    file
}

/// Every configuration renders exactly its golden restore input (for a namespace holding no
/// Netting rules); re-applying and cleaning up render theirs; and no golden file is left over
/// from a case that no longer exists.
#[test]
fn rules_match_golden_files() {
    let mut failures = Vec::new();
    let mut produced = BTreeSet::new();

    for (name, args) in CASES {
        let config = case_config(args);
        for family in config.families() {
            let text = rules(&config, family).fresh_input();
            produced.insert(check(name, family, &text, &mut failures));
        }
    }

    // The second run of the default configuration: chains are rebuilt, no jump is added.
    let default = rules(&case_config(CASES[0].1), Family::V4);
    let applied = Tables::parse(EMPTY_NAT)
        .unwrap()
        .restore(&default.fresh_input())
        .unwrap();
    let reapply = default.restore_input(&applied.nat());
    produced.insert(check(
        "default-reapply",
        Family::V4,
        &reapply,
        &mut failures,
    ));

    // Cleanup of the default configuration.
    let removal = cleanup(&applied.nat()).input.unwrap();
    produced.insert(check(
        "default-cleanup",
        Family::V4,
        &removal,
        &mut failures,
    ));

    let present: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for stale in present.difference(&produced) {
        failures.push(format!("{stale} is not produced by any case; delete it"));
    }

    assert!(
        failures.is_empty(),
        "{}\n\nIf the change is intended: NETTING_UPDATE_GOLDEN=1 cargo test -p netting-init --test golden",
        failures.join("\n\n")
    );
}
