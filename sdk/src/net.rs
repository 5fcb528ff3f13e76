//! Outbound TCP connections, for protocols that are not HTTP (NATS, Kafka, Redis, syslog...).
//!
//! A plugin may connect only to the `tcp://host:port` destinations its exporter's
//! `allowed_hosts` grants (by default, `tcp://` and `nats://` URLs under `*endpoint` keys
//! of its config). The host refuses, counts and logs everything else: a connection anywhere
//! else, listening, UDP without a `udp://` grant, and even looking up a name no grant names.
//! A refusal reaches the plugin as [`NetError::Denied`] (or [`NetError::Lookup`]).
//!
//! ```ignore
//! let mut nats = ferry_sdk::net::TcpStream::connect("nats.internal:4222", Duration::from_secs(5))?;
//! nats.write_all(b"PING\r\n")?;
//! ```
//!
//! Calls block the plugin (not the host) until they finish or their timeout passes; the
//! exporter's call `timeout` bounds them all.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Why a connection, a read or a write failed.
#[derive(Debug)]
pub enum NetError {
    /// The host refused it: the destination is not in `allowed_hosts`.
    Denied(String),
    /// The name could not be looked up (a name outside `allowed_hosts` is never looked up).
    Lookup(String),
    /// Nothing happened within the timeout.
    Timeout(String),
    /// Any other failure (refused connection, reset, closed by the peer...).
    Io(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Denied(m) => write!(f, "denied by the host: {m}"),
            NetError::Lookup(m) => write!(f, "name lookup failed: {m}"),
            NetError::Timeout(m) => write!(f, "timed out: {m}"),
            NetError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for NetError {}

impl NetError {
    fn from_io(what: &str, e: io::Error) -> NetError {
        // Under WASI an OS error may print as its bare number ("os error 14"): put its
        // meaning first, unless the text already says it.
        let (text, kind) = (e.to_string(), e.kind().to_string());
        let m = if e.raw_os_error().is_some() && !text.to_lowercase().contains(&kind) {
            format!("{what}: {kind} ({text})")
        } else {
            format!("{what}: {text}")
        };
        match e.kind() {
            io::ErrorKind::PermissionDenied => NetError::Denied(m),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => NetError::Timeout(m),
            _ => NetError::Io(m),
        }
    }
}

/// A blocking TCP connection with a timeout on every read and write.
#[derive(Debug)]
pub struct TcpStream(std::net::TcpStream);

impl TcpStream {
    /// Connects to `addr` (`host:port`), trying each address the host resolves it to,
    /// each within `timeout`, which then also bounds every read and write.
    pub fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, NetError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| NetError::Lookup(format!("{addr}: {e}")))?
            .collect();
        let mut last = NetError::Lookup(format!("{addr}: no address"));
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    let s = TcpStream(s);
                    s.set_timeout(timeout)?;
                    return Ok(s);
                }
                Err(e) => last = NetError::from_io(&format!("connect to {addr} ({a})"), e),
            }
        }
        Err(last)
    }

    /// Sets the timeout of every later read and write.
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), NetError> {
        let set = |r: io::Result<()>| r.map_err(|e| NetError::from_io("setting a timeout", e));
        set(self.0.set_read_timeout(Some(timeout)))?;
        set(self.0.set_write_timeout(Some(timeout)))
    }

    /// Writes all of `buf`.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), NetError> {
        Write::write_all(&mut self.0, buf).map_err(|e| NetError::from_io("write", e))
    }

    /// Reads what has arrived, at most `buf.len()` bytes; 0 means the peer closed.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        Read::read(&mut self.0, buf).map_err(|e| NetError::from_io("read", e))
    }

    /// The standard library's stream.
    pub fn std(&mut self) -> &mut std::net::TcpStream {
        &mut self.0
    }
}

/// For `BufReader` and the like; a timeout is an error of kind `TimedOut` or `WouldBlock`.
impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_failed_and_why_once() {
        let refused = NetError::from_io("connecting to h:1", io::Error::from_raw_os_error(111));
        let text = refused.to_string();
        assert!(text.starts_with("connecting to h:1: "), "{text}");
        assert_eq!(
            text.to_lowercase().matches("connection refused").count(),
            1,
            "{text}"
        );
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(
            NetError::from_io("x", denied),
            NetError::Denied(_)
        ));
        let late = io::Error::from(io::ErrorKind::TimedOut);
        assert!(matches!(NetError::from_io("x", late), NetError::Timeout(_)));
    }
}
