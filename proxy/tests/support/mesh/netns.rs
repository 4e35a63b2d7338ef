//! Sockets inside a lab namespace, without `ip netns exec`: a socket belongs to the network
//! namespace of the thread that creates it, for its whole life. So a short-lived thread enters
//! the namespace (`setns`, safe through nix), creates the socket and hands it back; the test's
//! runtime then uses it like any other. The test process itself stays in the root namespace.

use std::io;
use std::net::SocketAddr;

use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpSocket};

/// Runs `make` on a new thread that has entered the named namespace (`ip netns list` name).
pub(crate) fn within<T, F>(namespace: &str, make: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = format!("/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path)?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        make()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// A TCP listener bound to `addr` inside `namespace`, registered with the current runtime.
pub(crate) fn listen(namespace: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = within(namespace, move || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    TcpListener::from_std(listener)
}

/// An unconnected IPv4 TCP socket of `namespace`: what an application of that pod dials with.
/// Its connections leave through the pod's OUTPUT chain, so the pod's redirection applies.
pub(crate) fn socket(namespace: &str) -> io::Result<TcpSocket> {
    within(namespace, TcpSocket::new_v4)
}
