//! One run's network: the hub namespace with its bridge, one namespace per replica, the host's
//! veth into the hub, and the cuts in force. See the [module doc of `lab`](super) for the
//! picture.
//!
//! All methods block on short `ip`/`iptables-restore` commands (a few milliseconds each;
//! creating a 5-replica network runs about 40 of them). Create and tear down outside the
//! timed part of a run; [`Network::set_cuts`] runs its commands in parallel.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cmd;
use super::cuts::{Cuts, restore_input};
use super::error::LabError;
use super::names::{RunId, check_ifname};
use super::owner::{MarkerHold, lock_subnets};
use super::preflight::Tools;
use super::process::netns_command;
use super::subnet::{
    Ipv4Net, LAB_RANGE, LabSubnet, choose_subnet, prefixes_in_addr_output, prefixes_in_route_output,
};

/// Most replicas a network can have (addresses `.10` to `.73`).
pub const MAX_REPLICAS: usize = 64;

/// The bridge's name inside the hub namespace.
const BRIDGE: &str = "br0";
/// The hub's end of the host's veth.
const HUB_HOST_PORT: &str = "host";
/// A replica's end of its veth, inside its namespace.
const REPLICA_IFACE: &str = "eth0";

/// The hub's end of replica `i`'s veth.
fn hub_port(i: usize) -> String {
    format!("r{i}")
}

/// What a run created, in the order it did; tearing down undoes exactly this and forgets each
/// item once it is gone, so it can be repeated.
#[derive(Debug)]
struct Resources {
    ip: std::path::PathBuf,
    /// The host's veth (its peer in the hub goes with it).
    host_link: Option<String>,
    /// Hub first, then the replicas'.
    namespaces: Vec<String>,
}

impl Resources {
    /// Kills every process in the namespaces, deletes the host link and the namespaces.
    /// Goes on after a failure; returns the first.
    fn teardown(&mut self) -> Result<(), LabError> {
        let mut first_error = None;
        for namespace in &self.namespaces {
            if let Err(e) = kill_all_in(&self.ip, namespace) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(link) = &self.host_link {
            match delete_link(&self.ip, link) {
                Ok(()) => self.host_link = None,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut remaining = Vec::new();
        for namespace in self.namespaces.drain(..).rev() {
            if let Err(e) = delete_namespace(&self.ip, &namespace) {
                first_error.get_or_insert(e);
                remaining.push(namespace);
            }
        }
        remaining.reverse();
        self.namespaces = remaining;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The pids of the processes in `namespace` (`ip netns pids`).
pub(crate) fn pids_in(ip: &Path, namespace: &str) -> Result<Vec<u32>, LabError> {
    let out = cmd::run(&mut cmd::ip(ip, ["netns", "pids", namespace]))?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// SIGKILLs every process in `namespace`; returns their pids. A namespace that is already gone
/// has none.
pub(crate) fn kill_all_in(ip: &Path, namespace: &str) -> Result<Vec<u32>, LabError> {
    if !namespace_exists(namespace) {
        return Ok(Vec::new());
    }
    let pids = pids_in(ip, namespace)?;
    for &pid in &pids {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        match kill(Pid::from_raw(raw), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(LabError::Signal {
                    pid,
                    signal: "SIGKILL",
                    source,
                });
            }
        }
    }
    Ok(pids)
}

/// Whether a named namespace exists (`ip netns add` creates `/run/netns/<name>`).
pub(crate) fn namespace_exists(namespace: &str) -> bool {
    Path::new("/run/netns").join(namespace).exists()
}

/// Whether an interface exists in our (the root) namespace.
pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a named namespace; one that is already gone is not an error.
pub(crate) fn delete_namespace(ip: &Path, namespace: &str) -> Result<(), LabError> {
    match cmd::run(&mut cmd::ip(ip, ["netns", "delete", namespace])) {
        Err(_) if !namespace_exists(namespace) => Ok(()),
        other => other.map(drop),
    }
}

/// Deletes a root-namespace link; one that is already gone is not an error.
pub(crate) fn delete_link(ip: &Path, name: &str) -> Result<(), LabError> {
    match cmd::run(&mut cmd::ip(ip, ["link", "delete", name])) {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

/// What `set_cuts` has put in force, per replica namespace.
#[derive(Debug)]
struct CutState {
    /// The rules in force (rendered without jumps), `None` before the chains exist.
    rendered: Vec<Option<String>>,
    /// The last set of cuts applied to every namespace.
    applied: Cuts,
}

/// The network of one run. Dropping it tears it down.
#[derive(Debug)]
pub struct Network {
    id: RunId,
    tools: Tools,
    subnet: LabSubnet,
    host_link: String,
    hub: String,
    namespaces: Vec<String>,
    cuts: Mutex<CutState>,
    resources: Resources,
    /// Declared after `resources`, so dropped after the teardown: the marker vouches for the
    /// lab until nothing of it is left.
    _marker: Option<MarkerHold>,
}

impl Network {
    /// Creates the network of this process's lab, named `nch<pid>...`, driven by `tools` (from
    /// a [preflight check](super::preflight::check)).
    pub fn create(tools: &Tools, replicas: usize) -> Result<Network, LabError> {
        Self::create_with_id(tools, RunId::current(), replicas)
    }

    /// Creates a network named after `id` (tests hold several at once, with different tags),
    /// driven by `tools`. On failure everything created so far is removed again.
    pub fn create_with_id(tools: &Tools, id: RunId, replicas: usize) -> Result<Network, LabError> {
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(LabError::ReplicaCount {
                replicas,
                max: MAX_REPLICAS,
            });
        }
        let host_link = id.host_link();
        check_ifname(&host_link)?;
        // Only a lab of this very process can be vouched for; one named after another pid is
        // meant to be stale (see RunId::new).
        let marker = if id.pid() == std::process::id() {
            Some(MarkerHold::acquire()?)
        } else {
            None
        };
        let mut resources = Resources {
            ip: tools.ip.clone(),
            host_link: None,
            namespaces: Vec::new(),
        };
        let subnet = match build(&tools.ip, id, replicas, &mut resources) {
            Ok(subnet) => subnet,
            Err(e) => {
                if let Err(cleanup) = resources.teardown() {
                    tracing::warn!(lab = %id, error = %cleanup, "cleanup after a failed create");
                }
                return Err(e);
            }
        };
        tracing::info!(lab = %id, %replicas, subnet = %subnet.net(), "lab network created");
        Ok(Network {
            id,
            tools: tools.clone(),
            subnet,
            host_link,
            hub: id.hub_namespace(),
            namespaces: (0..replicas).map(|i| id.replica_namespace(i)).collect(),
            cuts: Mutex::new(CutState {
                rendered: vec![None; replicas],
                applied: Cuts::none(),
            }),
            resources,
            _marker: marker,
        })
    }

    /// The run id all names derive from.
    pub fn id(&self) -> RunId {
        self.id
    }

    /// The tools the network is driven with.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// How many replicas (namespaces) there are.
    pub fn replicas(&self) -> usize {
        self.namespaces.len()
    }

    /// The lab's /24.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet.net()
    }

    /// The host's address on the lab's /24: where the clients' connections come from.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.subnet.host_addr()
    }

    /// Replica `i`'s address. Panics if `i >= replicas()`.
    pub fn replica_addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.replicas(), "replica {i} of {}", self.replicas());
        self.subnet.replica_addr(i)
    }

    /// Replica `i`'s namespace. Panics if `i >= replicas()`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// The hub namespace, which holds the bridge.
    pub fn hub_namespace(&self) -> &str {
        &self.hub
    }

    /// The host's interface into the lab (in the root namespace).
    pub fn host_link(&self) -> &str {
        &self.host_link
    }

    /// A command running `program` in replica `i`'s namespace. Panics if `i >= replicas()`.
    pub fn command_in(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        netns_command(&self.tools.ip, self.namespace(i), program)
    }

    /// The cuts last put in force by [`Network::set_cuts`].
    pub fn current_cuts(&self) -> Cuts {
        self.lock_cuts().applied.clone()
    }

    fn lock_cuts(&self) -> std::sync::MutexGuard<'_, CutState> {
        self.cuts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the cuts in force with `cuts`. Each replica's namespace switches atomically
    /// (one `iptables-restore` transaction); the namespaces are updated in parallel and only
    /// those whose rules change are touched. Calls are serialised.
    pub fn set_cuts(&self, cuts: &Cuts) -> Result<(), LabError> {
        cuts.validate(self.replicas())?;
        let mut state = self.lock_cuts();
        let mut pending = Vec::new();
        for (i, namespace) in self.namespaces.iter().enumerate() {
            let rules = restore_input(cuts, i, &self.subnet, false);
            if state.rendered[i].as_deref() == Some(rules.as_str()) {
                continue;
            }
            let input = if state.rendered[i].is_none() {
                restore_input(cuts, i, &self.subnet, true)
            } else {
                rules.clone()
            };
            let mut command =
                netns_command(&self.tools.ip, namespace, &self.tools.iptables_restore);
            command.args(["--noflush", "--wait=10"]);
            pending.push((i, rules, cmd::spawn_with_input(&mut command, &input)));
        }
        let mut first_error = None;
        for (i, rules, started) in pending {
            match started.and_then(cmd::Pending::finish) {
                Ok(_) => state.rendered[i] = Some(rules),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::debug!(lab = %self.id, ?cuts, "cuts in force");
                state.applied = cuts.clone();
                Ok(())
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), LabError> {
        self.set_cuts(&Cuts::none())
    }

    /// Kills every process still in the lab's namespaces (SIGKILL), then deletes the host's
    /// veth and the namespaces (their links and the bridge go with them). Can be called again;
    /// also runs on drop.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        let result = self.resources.teardown();
        if result.is_ok() {
            tracing::info!(lab = %self.id, "lab network torn down");
        }
        result
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.resources.teardown() {
            tracing::error!(lab = %self.id, error = %e, "tearing down the lab network failed");
        }
    }
}

/// Builds the network, recording in `resources` what exists as soon as it does.
fn build(
    ip: &Path,
    id: RunId,
    replicas: usize,
    resources: &mut Resources,
) -> Result<LabSubnet, LabError> {
    let run = |args: &[&str]| cmd::run(&mut cmd::ip(ip, args)).map(drop);

    let hub = id.hub_namespace();
    run(&["netns", "add", &hub])?;
    resources.namespaces.push(hub.clone());
    run(&["-n", &hub, "link", "set", "lo", "up"])?;
    run(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
    run(&["-n", &hub, "link", "set", BRIDGE, "up"])?;
    disable_bridge_netfilter(ip, &hub);

    let host_link = id.host_link();
    let subnet = {
        let _lock = lock_subnets()?;
        let subnet = free_subnet(ip)?;
        run(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            HUB_HOST_PORT,
            "netns",
            &hub,
        ])?;
        resources.host_link = Some(host_link.clone());
        let cidr = format!("{}/24", subnet.host_addr());
        run(&["addr", "add", &cidr, "dev", &host_link])?;
        subnet
    };
    run(&["link", "set", &host_link, "up"])?;
    run(&[
        "-n",
        &hub,
        "link",
        "set",
        HUB_HOST_PORT,
        "master",
        BRIDGE,
        "up",
    ])?;

    for i in 0..replicas {
        let namespace = id.replica_namespace(i);
        let port = hub_port(i);
        run(&["netns", "add", &namespace])?;
        resources.namespaces.push(namespace.clone());
        run(&["-n", &namespace, "link", "set", "lo", "up"])?;
        run(&[
            "-n",
            &hub,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            REPLICA_IFACE,
            "netns",
            &namespace,
        ])?;
        let cidr = format!("{}/24", subnet.replica_addr(i));
        run(&["-n", &namespace, "addr", "add", &cidr, "dev", REPLICA_IFACE])?;
        run(&["-n", &namespace, "link", "set", REPLICA_IFACE, "up"])?;
        run(&["-n", &hub, "link", "set", &port, "master", BRIDGE, "up"])?;
    }
    Ok(subnet)
}

/// The first /24 of the lab range no address or route of the host overlaps.
fn free_subnet(ip: &Path) -> Result<LabSubnet, LabError> {
    let addrs = cmd::run(&mut cmd::ip(ip, ["-o", "-4", "addr", "show"]))?;
    let routes = cmd::run(&mut cmd::ip(ip, ["-4", "route", "show", "table", "all"]))?;
    let mut used = prefixes_in_addr_output(&addrs);
    used.extend(prefixes_in_route_output(&routes));
    choose_subnet(&used).ok_or_else(|| LabError::NoFreeSubnet {
        range: LAB_RANGE.to_string(),
    })
}

/// With `br_netfilter` loaded, bridged IPv4 traffic is passed through iptables' FORWARD chain
/// of the bridge's namespace when that namespace's `bridge-nf-call-iptables` is 1 (the
/// default), whatever the bridge's own `nf_call_iptables` option says: the kernel ORs the two.
/// That is why the bridge lives in the hub namespace and not in the host's, where Docker's
/// FORWARD policy DROP would apply: the hub's FORWARD chain is empty. Switching the hub's
/// sysctl off as well spares the packets the detour; failing to is harmless.
fn disable_bridge_netfilter(ip: &Path, hub: &str) {
    const SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !Path::new(SYSCTL).exists() {
        return; // br_netfilter is not loaded
    }
    let mut command = netns_command(ip, hub, "sh");
    command.args(["-c", &format!("echo 0 > {SYSCTL}")]);
    if let Err(e) = cmd::run(&mut command) {
        tracing::warn!(%hub, error = %e, "could not switch off bridge-nf-call-iptables in the hub");
    }
}
