//! Where a redirected connection was going: `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6) in production, something a test chooses otherwise.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// A test's way to name the destination of an accepted connection.
pub type DestinationFn = dyn Fn(&TcpStream) -> io::Result<SocketAddr> + Send + Sync;

/// How a listener learns the original destination of the connections it accepts.
#[derive(Clone)]
pub enum OriginalDestination {
    /// Asks the kernel where the connection was going before netting-init's `REDIRECT`.
    Socket,
    /// Every connection was going to this address (tests, a fixed forwarder).
    Fixed(SocketAddr),
    /// Computed from the accepted connection (tests).
    Lookup(Arc<DestinationFn>),
}

impl fmt::Debug for OriginalDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginalDestination::Socket => f.write_str("Socket"),
            OriginalDestination::Fixed(address) => f.debug_tuple("Fixed").field(address).finish(),
            OriginalDestination::Lookup(_) => f.write_str("Lookup(..)"),
        }
    }
}

impl OriginalDestination {
    /// The destination of `stream`, IPv4-mapped IPv6 addresses given as IPv4.
    pub fn resolve(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        let destination = match self {
            OriginalDestination::Socket => from_socket(stream)?,
            OriginalDestination::Fixed(address) => *address,
            OriginalDestination::Lookup(lookup) => lookup(stream)?,
        };
        Ok(canonical(destination))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack listener sees IPv4
/// clients that way; the catalog names them as IPv4).
pub(crate) fn canonical(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => address,
        },
        SocketAddr::V4(_) => address,
    }
}

/// The kernel's answer. An IPv4 connection on a dual-stack socket is asked with the IPv4
/// option first; the other family is tried when the first fails.
fn from_socket(stream: &TcpStream) -> io::Result<SocketAddr> {
    let ipv4_first = match canonical(stream.local_addr()?) {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(_) => false,
    };
    let ipv4 = || -> io::Result<SocketAddr> {
        let raw = getsockopt(stream, sockopt::OriginalDst)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
            u16::from_be(raw.sin_port),
        )))
    };
    let ipv6 = || -> io::Result<SocketAddr> {
        let raw = getsockopt(stream, sockopt::Ip6tOriginalDst)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(raw.sin6_addr.s6_addr),
            u16::from_be(raw.sin6_port),
            raw.sin6_flowinfo,
            raw.sin6_scope_id,
        )))
    };
    if ipv4_first {
        ipv4().or_else(|first| ipv6().map_err(|_| first))
    } else {
        ipv6().or_else(|first| ipv4().map_err(|_| first))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.7]:80".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "10.0.0.7:80".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[fd00::7]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    /// Without root there is no redirect to observe; what matters is that a connection
    /// which was not redirected gives either an error or its own local address (conntrack
    /// without NAT), never a panic. The data plane refuses both.
    #[tokio::test]
    async fn a_connection_that_was_not_redirected_is_not_given_a_foreign_destination() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _client = TcpStream::connect(address).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        match OriginalDestination::Socket.resolve(&accepted) {
            Ok(destination) => assert_eq!(destination, address),
            Err(error) => assert!(error.raw_os_error().is_some(), "{error}"),
        }
        let fixed: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(
            OriginalDestination::Fixed(fixed)
                .resolve(&accepted)
                .unwrap(),
            fixed
        );
    }
}
