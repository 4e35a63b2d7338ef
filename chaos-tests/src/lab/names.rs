//! Names of everything a run creates, built from its [`RunId`], and the reverse: which run a
//! name on this host belongs to (what the stale sweep needs).
//!
//! Every name starts with `nch<pid>` (plus an optional letter, so that one process can hold
//! several labs at once, as the tests do):
//!
//! | what                                  | name            | where           |
//! |---------------------------------------|-----------------|-----------------|
//! | host end of the host's veth           | `nch<pid>`      | root namespace  |
//! | hub namespace (holds the bridge)      | `nch<pid>-hub`  |                 |
//! | replica `i`'s namespace               | `nch<pid>-<i>`  |                 |
//! | preflight's throwaway namespace       | `nch<pid>-pf<k>`|                 |
//!
//! Only the first is an interface in the root namespace; the bridge (`br0`) and the ports
//! (`host`, `r<i>`, `eth0`) live inside the lab's namespaces, where they cannot clash.

use std::fmt;

use super::error::LabError;

/// What every name of the lab starts with.
pub const NAME_PREFIX: &str = "nch";

/// Longest interface name Linux accepts (`IFNAMSIZ` is 16, including the terminating NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Identifies one lab: the pid of the process that owns it, and an optional lowercase letter
/// that tells apart several labs of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId {
    pid: u32,
    tag: Option<char>,
}

impl RunId {
    /// The run id of this process's (first) lab.
    pub fn current() -> Self {
        Self {
            pid: std::process::id(),
            tag: None,
        }
    }

    /// A run id for `pid`; `tag`, if given, must be an ASCII lowercase letter.
    ///
    /// The pid should be this process's: the stale sweep keeps a lab only while the process
    /// named by its pid is alive and is the one that created it (a lab named after another pid
    /// is swept as soon as anyone sweeps, which is how the tests fake a crashed run).
    pub fn new(pid: u32, tag: Option<char>) -> Result<Self, LabError> {
        if pid == 0 {
            return Err(LabError::InvalidRunId("pid 0".to_owned()));
        }
        if let Some(tag) = tag
            && !tag.is_ascii_lowercase()
        {
            return Err(LabError::InvalidRunId(format!(
                "tag {tag:?} is not an ASCII lowercase letter"
            )));
        }
        Ok(Self { pid, tag })
    }

    /// The owning process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The letter that tells this lab from others of the same process, if any.
    pub fn tag(&self) -> Option<char> {
        self.tag
    }

    /// `nch<pid>` or `nch<pid><tag>`: the start of every name of this run.
    pub fn prefix(&self) -> String {
        match self.tag {
            Some(tag) => format!("{NAME_PREFIX}{}{tag}", self.pid),
            None => format!("{NAME_PREFIX}{}", self.pid),
        }
    }

    /// The host's end of the veth into the hub: the lab's only interface in the root namespace.
    pub fn host_link(&self) -> String {
        self.prefix()
    }

    /// The namespace holding the bridge.
    pub fn hub_namespace(&self) -> String {
        format!("{}-hub", self.prefix())
    }

    /// Replica `i`'s namespace.
    pub fn replica_namespace(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix())
    }

    /// The `k`-th throwaway namespace of preflight.
    pub fn preflight_namespace(&self, k: u64) -> String {
        format!("{}-pf{k}", self.prefix())
    }

    /// The run a namespace or link name belongs to: `nch<pid>[tag]` alone or followed by `-...`.
    pub fn parse(name: &str) -> Option<RunId> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let pid: u32 = rest[..digits].parse().ok()?;
        let mut rest = &rest[digits..];
        let mut tag = None;
        if let Some(c) = rest.chars().next()
            && c.is_ascii_lowercase()
        {
            tag = Some(c);
            rest = &rest[1..];
        }
        if rest.is_empty() || rest.starts_with('-') {
            RunId::new(pid, tag).ok()
        } else {
            None
        }
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix())
    }
}

/// Checks that `name` can be an interface name (1 to 15 bytes, no `/`, whitespace or `:`).
pub fn check_ifname(name: &str) -> Result<(), LabError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(LabError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(LabError::InvalidRunId(format!(
            "`{name}` is not a valid interface name"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_run() {
        let id = RunId::new(4242, None).unwrap();
        assert_eq!(id.prefix(), "nch4242");
        assert_eq!(id.host_link(), "nch4242");
        assert_eq!(id.hub_namespace(), "nch4242-hub");
        assert_eq!(id.replica_namespace(3), "nch4242-3");
        assert_eq!(id.preflight_namespace(7), "nch4242-pf7");
        let tagged = RunId::new(4242, Some('b')).unwrap();
        assert_eq!(tagged.host_link(), "nch4242b");
        assert_eq!(tagged.replica_namespace(0), "nch4242b-0");
        assert_eq!(tagged.to_string(), "nch4242b");
    }

    #[test]
    fn the_longest_host_link_fits_in_ifnamsiz() {
        // u32::MAX has 10 digits: "nch" + 10 + tag = 14 bytes.
        let id = RunId::new(u32::MAX, Some('z')).unwrap();
        assert_eq!(id.host_link().len(), 14);
        check_ifname(&id.host_link()).unwrap();
        // Linux's pid_max is at most 2^22, 7 digits.
        check_ifname(&RunId::new(4_194_304, Some('a')).unwrap().host_link()).unwrap();
    }

    #[test]
    fn ifname_limits() {
        check_ifname("abcdefghijklmno").unwrap();
        assert!(matches!(
            check_ifname("abcdefghijklmnop"),
            Err(LabError::NameTooLong { len: 16, .. })
        ));
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
    }

    #[test]
    fn bad_tags_are_refused() {
        assert!(RunId::new(1, Some('A')).is_err());
        assert!(RunId::new(1, Some('-')).is_err());
        assert!(RunId::new(0, None).is_err());
    }

    #[test]
    fn parse_inverts_the_names() {
        for id in [
            RunId::new(17, None).unwrap(),
            RunId::new(4_194_304, Some('q')).unwrap(),
        ] {
            for name in [
                id.host_link(),
                id.hub_namespace(),
                id.replica_namespace(12),
                id.preflight_namespace(3),
            ] {
                assert_eq!(RunId::parse(&name), Some(id), "{name}");
            }
        }
    }

    #[test]
    fn parse_ignores_other_names() {
        for name in [
            "eth0",
            "nch",
            "nchx",
            "nch12ab",
            "nch12_0",
            "nch99999999999",
            "nch0",
            "docker0",
            "ninit-probe",
        ] {
            assert_eq!(RunId::parse(name), None, "{name}");
        }
    }
}
