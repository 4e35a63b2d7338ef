//! The programs a lab runs: this package's `netting-proxy` (built by cargo for the test), and
//! the workspace's `netting-control` and `netting-init`, built here once per test process so
//! that a test never runs a stale one. `NETTING_CONTROL_BIN` / `NETTING_INIT_BIN` point to
//! prebuilt ones instead (then nothing is built).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The proxy under test.
pub(crate) const PROXY: &str = env!("CARGO_BIN_EXE_netting-proxy");

/// The uid and gid the proxy runs as (netting-init's `--proxy-uid`).
pub(crate) const PROXY_UID: u32 = 1337;

#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) proxy: PathBuf,
    pub(crate) control: PathBuf,
    pub(crate) init: PathBuf,
    /// `setpriv` (util-linux): starts the proxy as [`PROXY_UID`] with no capabilities.
    pub(crate) setpriv: PathBuf,
}

/// The binaries, built on first use; the error says what failed.
pub(crate) fn binaries() -> anyhow::Result<Binaries> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_or_build() -> anyhow::Result<Binaries> {
    let proxy = PathBuf::from(PROXY);
    let dir = proxy
        .parent()
        .context("the proxy binary has no directory")?
        .to_path_buf();
    let control = std::env::var_os("NETTING_CONTROL_BIN").map(PathBuf::from);
    let init = std::env::var_os("NETTING_INIT_BIN").map(PathBuf::from);
    if control.is_none() || init.is_none() {
        build_workspace_binaries(&dir)?;
    }
    let control = control.unwrap_or_else(|| dir.join("netting-control"));
    let init = init.unwrap_or_else(|| dir.join("netting-init"));
    for path in [&proxy, &control, &init] {
        if !path.is_file() {
            bail!("{} does not exist", path.display());
        }
    }
    let setpriv = netting_chaos::lab::preflight::locate("setpriv")
        .context("`setpriv` not found: install the Debian package util-linux")?;
    Ok(Binaries {
        proxy,
        control,
        init,
        setpriv,
    })
}

/// `cargo build` of netting-control and netting-init with the profile the tests were built
/// with (the name of the directory the proxy binary is in: `debug` is the `dev` profile).
fn build_workspace_binaries(dir: &Path) -> anyhow::Result<()> {
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(["build", "--profile", &profile])
        .args(["-p", "netting-control", "--bin", "netting-control"])
        .args(["-p", "netting-init", "--bin", "netting-init"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("running {cargo} build"))?;
    if !status.success() {
        bail!("cargo build of netting-control and netting-init failed ({status})");
    }
    Ok(())
}

/// `path` if a process of another uid can execute it (every directory above it searchable by
/// others, the file readable and executable by them), else a copy of it in `spare` (a
/// directory this function makes world-searchable).
pub(crate) fn runnable_by_others(path: &Path, spare: &Path) -> anyhow::Result<PathBuf> {
    let others_may = |p: &Path, bits: u32| {
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
    };
    let reachable = path
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty())
        .all(|dir| others_may(dir, 0o001));
    if reachable && others_may(path, 0o005) {
        return Ok(path.to_path_buf());
    }
    std::fs::set_permissions(spare, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", spare.display()))?;
    for dir in spare.ancestors().skip(1) {
        if !others_may(dir, 0o001) {
            bail!(
                "{} cannot be run by uid {PROXY_UID} and neither can a copy in {}: {} is not \
                 searchable by others",
                path.display(),
                spare.display(),
                dir.display()
            );
        }
    }
    let name = path.file_name().context("binary without a name")?;
    let copy = spare.join(name);
    std::fs::copy(path, &copy)
        .with_context(|| format!("copying {} to {}", path.display(), copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", copy.display()))?;
    Ok(copy)
}
