//! Replica addresses: what the operator typed, normalised to the URI tonic dials.
//!
//! Normalising early means the same replica written two ways (`127.0.0.1:7100`,
//! `http://127.0.0.1:7100/`) is asked once, and a member address reported by the cluster can be
//! compared with the ones given on the command line.

use std::fmt;
use std::net::Ipv6Addr;

use thiserror::Error;

/// Where replicas are looked for when neither `--addr` nor the environment names one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7100";
/// The port assumed when an address names only a host.
pub const DEFAULT_PORT: u16 = 7100;
/// The environment variable read when `--addr` is not given.
pub const ADDR_ENV: &str = "NETTING_ADDR";

/// An address that cannot be dialled, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid replica address {raw:?}: {reason}")]
pub struct InvalidAddr {
    pub raw: String,
    pub reason: String,
}

impl InvalidAddr {
    fn new(raw: &str, reason: impl Into<String>) -> Self {
        Self {
            raw: raw.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One replica's gRPC address, normalised to `http://host:port` (host lowercased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    uri: String,
    authority: String,
}

impl Target {
    /// Parses `host`, `host:port`, `[v6]:port` or any of those behind `http://`.
    pub fn parse(raw: &str) -> Result<Self, InvalidAddr> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidAddr::new(raw, "empty"));
        }
        let rest = match trimmed.split_once("://") {
            None => trimmed,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                // The control plane's gRPC port is plain HTTP/2; failing here is clearer than
                // a handshake error from every replica.
                return Err(InvalidAddr::new(
                    raw,
                    "TLS is not supported; use http:// or no scheme",
                ));
            }
            Some((scheme, _)) => {
                return Err(InvalidAddr::new(
                    raw,
                    format!("unsupported scheme {scheme:?}; use http:// or no scheme"),
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(InvalidAddr::new(
                raw,
                "must be host:port, without path, query or user",
            ));
        }
        let (host, port) = split_host_port(raw, rest)?;
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => parse_port(raw, text)?,
        };
        let authority = format!("{host}:{port}");
        Ok(Self {
            uri: format!("http://{authority}"),
            authority,
        })
    }

    /// The URI to dial, e.g. `http://127.0.0.1:7100`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `host:port`, the form shown to the operator.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority)
    }
}

/// Splits `rest` into a lowercased host and the port text, if any.
fn split_host_port<'a>(raw: &str, rest: &'a str) -> Result<(String, Option<&'a str>), InvalidAddr> {
    if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(InvalidAddr::new(raw, "missing ']' after an IPv6 address"));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(InvalidAddr::new(
                raw,
                format!("{inside:?} is not an IPv6 address"),
            ));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(InvalidAddr::new(raw, "expected ':' after ']'")),
            },
        };
        return Ok((format!("[{}]", inside.to_ascii_lowercase()), port));
    }
    let (host, port) = match rest.matches(':').count() {
        0 => (rest, None),
        1 => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
        _ => {
            return Err(InvalidAddr::new(
                raw,
                "write IPv6 addresses in brackets, e.g. [::1]:7100",
            ));
        }
    };
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if host.is_empty() || !host.chars().all(host_char) {
        return Err(InvalidAddr::new(
            raw,
            format!("{host:?} is not a host name or IP"),
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(raw: &str, text: &str) -> Result<u16, InvalidAddr> {
    match text.parse::<u16>() {
        Ok(0) => Err(InvalidAddr::new(raw, "port 0 is not allowed")),
        Ok(port) => Ok(port),
        Err(_) => Err(InvalidAddr::new(
            raw,
            format!("port {text:?} is not a number between 1 and 65535"),
        )),
    }
}

/// The replicas to ask, in order: the `--addr` values if any were given, else the value of
/// [`ADDR_ENV`] if set and not blank, else [`DEFAULT_ADDR`].
///
/// Every value may hold a comma-separated list; empty items are skipped so that a list built
/// by a script with a trailing comma still works. Duplicates are dropped, keeping the first.
pub fn resolve(flags: &[String], env: Option<&str>) -> Result<Vec<Target>, InvalidAddr> {
    let sources: Vec<&str> = if !flags.is_empty() {
        flags.iter().map(String::as_str).collect()
    } else {
        match env {
            Some(value) if !value.trim().is_empty() => vec![value],
            _ => vec![DEFAULT_ADDR],
        }
    };
    let mut targets: Vec<Target> = Vec::new();
    for item in sources.iter().flat_map(|s| s.split(',')) {
        if item.trim().is_empty() {
            continue;
        }
        let target = Target::parse(item)?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    if targets.is_empty() {
        return Err(InvalidAddr::new(&sources.join(","), "no address given"));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn uri(raw: &str) -> String {
        Target::parse(raw).unwrap().uri().to_owned()
    }

    /// Bare `host:port`, `http://` URIs, trailing slashes and IPv6 brackets all normalise to one URI form.
    #[test]
    fn addresses_normalise_to_http_uris() {
        assert_eq!(uri("127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(uri("http://127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(
            uri("HTTP://Replica-0.Netting:7101/"),
            "http://replica-0.netting:7101"
        );
        assert_eq!(uri(" [::1]:7100 "), "http://[::1]:7100");
        assert_eq!(uri("http://[FE80::1]:9"), "http://[fe80::1]:9");
        assert_eq!(uri("netting-0"), "http://netting-0:7100");
        assert_eq!(uri("[::1]"), "http://[::1]:7100");
        assert_eq!(
            Target::parse("10.0.0.1:80").unwrap().authority(),
            "10.0.0.1:80"
        );
    }

    /// Addresses tonic could not dial are refused with a reason instead of failing at connect time.
    #[test]
    fn undiallable_addresses_are_refused() {
        for bad in [
            "",
            "https://127.0.0.1:7100",
            "grpc://127.0.0.1:7100",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:http",
            "::1",
            "[::1",
            "[nope]:7100",
            "[::1]7100",
            "host:7100/path",
            "user@host:7100",
            ":7100",
            "bad host:7100",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let err = Target::parse("::1").unwrap_err();
        assert!(err.reason.contains("brackets"), "{err}");
    }

    /// `--addr` wins over the environment, which wins over the default; lists split on commas and duplicates go.
    #[test]
    fn resolution_order_and_list_splitting() {
        let flags = vec![
            "a:1,b:2".to_owned(),
            "http://a:1".to_owned(),
            "c:3,".to_owned(),
        ];
        let got: Vec<String> = resolve(&flags, Some("env:9"))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["a:1", "b:2", "c:3"]);

        let got = resolve(&[], Some("x:1, y:2")).unwrap();
        assert_eq!(
            got,
            [Target::parse("x:1").unwrap(), Target::parse("y:2").unwrap()]
        );

        assert_eq!(
            resolve(&[], None).unwrap(),
            [Target::parse(DEFAULT_ADDR).unwrap()]
        );
        assert_eq!(
            resolve(&[], Some("  ")).unwrap(),
            [Target::parse(DEFAULT_ADDR).unwrap()]
        );
    }

    /// A list with nothing in it, or one bad item, is an error rather than a silent fallback.
    #[test]
    fn empty_or_bad_lists_are_errors() {
        assert!(resolve(&[",".to_owned()], None).is_err());
        assert!(resolve(&["a:1,https://b:2".to_owned()], None).is_err());
    }
}
