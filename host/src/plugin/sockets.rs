//! Sockets in the sandbox: a plugin reaches the `tcp://` and `udp://` destinations its
//! `allowed_hosts` grants, and nothing else.
//!
//! wasmtime asks [`SocketGuard::permits`] before every bind, listen, connect and datagram;
//! name lookups go through this module's own `wasi:sockets/ip-name-lookup`, which refuses
//! names no grant names (a lookup alone can carry data out) and remembers the addresses an
//! allowed name resolved to, so that a connection to one of them is checked against the
//! grants of the name. Every refusal fails in the plugin, is counted and logged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress};
use wasmtime_wasi::p2::bindings::sockets::tcp::{HostTcpSocket, TcpSocket};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Network, SocketError};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView, WasiSocketsView};

use super::ctx::{Egress, PluginCtx};
use super::policy::{AllowedHosts, Transport};
use super::text::escape;

/// Addresses one instance remembers from its lookups; past this, a newly resolved address
/// is not remembered and a connection to it is refused (a hostile plugin cannot grow it).
const MAX_LEARNED: usize = 256;

/// Lookups one instance may have open at once (each holds a name).
const MAX_LOOKUPS: usize = 64;

/// One instance's socket policy: the grants, and what its lookups of granted names found.
pub struct SocketGuard {
    egress: Egress,
    state: Mutex<Learned>,
}

#[derive(Default)]
struct Learned {
    /// Address → the granted names it was resolved from.
    addresses: HashMap<IpAddr, Vec<Arc<str>>>,
    /// Open lookups: the stream's handle → the name looked up.
    lookups: HashMap<u32, Arc<str>>,
}

impl SocketGuard {
    /// The guard of one instance of the exporter `egress` describes.
    pub fn new(egress: Egress) -> Arc<SocketGuard> {
        Arc::new(SocketGuard {
            egress,
            state: Mutex::default(),
        })
    }

    fn allowed(&self) -> &AllowedHosts {
        &self.egress.allowed
    }

    fn state(&self) -> MutexGuard<'_, Learned> {
        // Nothing panics while holding it; a poisoned lock still holds consistent maps.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// wasmtime's question before a socket uses `addr`: binds only as the OS does before a
    /// connection (any address, any port), never a listener, and connections and datagrams
    /// only to granted destinations.
    pub fn permits(&self, addr: SocketAddr, what: SocketAddrUse) -> bool {
        let implicit = addr.ip().is_unspecified() && addr.port() == 0;
        let verdict = match what {
            SocketAddrUse::TcpBind if implicit => Ok(()),
            SocketAddrUse::UdpBind if !self.allowed().grants(Transport::Udp) => {
                Err("no udp:// destination in allowed_hosts")
            }
            SocketAddrUse::UdpBind if implicit => Ok(()),
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => Err("binding to an address"),
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => Err("listening"),
            SocketAddrUse::TcpConnect => self.reaches(Transport::Tcp, addr),
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                self.reaches(Transport::Udp, addr)
            }
        };
        match verdict {
            Ok(()) => true,
            Err(why) => {
                let action = match what {
                    SocketAddrUse::TcpBind => "TCP bind to",
                    SocketAddrUse::TcpListen => "TCP listen on",
                    SocketAddrUse::TcpAccept => "TCP accept from",
                    SocketAddrUse::TcpConnect => "TCP connect to",
                    SocketAddrUse::UdpBind => "UDP bind to",
                    SocketAddrUse::UdpSend => "UDP datagram to",
                    SocketAddrUse::UdpReceive => "UDP datagram from",
                };
                self.deny(&format!("{action} {addr}"), why);
                false
            }
        }
    }

    fn reaches(&self, transport: Transport, addr: SocketAddr) -> Result<(), &'static str> {
        let names = self
            .state()
            .addresses
            .get(&addr.ip().to_canonical())
            .cloned()
            .unwrap_or_default();
        if self.allowed().permits_socket(transport, addr, &names) {
            Ok(())
        } else {
            Err("not in allowed_hosts")
        }
    }

    /// Counts a refusal and logs it under the exporter's name (rate-limited, escaped).
    fn deny(&self, what: &str, why: &str) {
        self.egress.denied.inc();
        let gate = &self.egress.log;
        if gate.admit() {
            let max = gate.policy().max_message_bytes;
            tracing::warn!(
                exporter = &*self.egress.exporter,
                "plugin {} denied: {why}",
                escape(what, max)
            );
        }
    }

    fn lookup_started(&self, handle: u32, name: &str) {
        let mut state = self.state();
        if state.lookups.len() < MAX_LOOKUPS {
            state.lookups.insert(handle, name.into());
        }
    }

    fn learn(&self, handle: u32, ip: IpAddr) {
        let mut state = self.state();
        let Some(name) = state.lookups.get(&handle).cloned() else {
            return;
        };
        let full = state.addresses.len() >= MAX_LEARNED;
        let ip = ip.to_canonical();
        if let Some(names) = state.addresses.get_mut(&ip) {
            if !names.contains(&name) && names.len() < MAX_LOOKUPS {
                names.push(name);
            }
        } else if !full {
            state.addresses.insert(ip, vec![name]);
        }
    }

    fn lookup_ended(&self, handle: u32) {
        self.state().lookups.remove(&handle);
    }
}

/// `wasi:sockets/ip-name-lookup` through the guard: WASI's own resolver for names the
/// grants name, a refusal for any other.
pub struct LookupView<'a> {
    inner: WasiSocketsCtxView<'a>,
    guard: Arc<SocketGuard>,
}

impl PluginCtx {
    fn lookup_view(&mut self) -> LookupView<'_> {
        let guard = self.sockets_guard();
        LookupView {
            inner: self.sockets(),
            guard,
        }
    }
}

struct GuardedLookup;

impl HasData for GuardedLookup {
    type Data<'a> = LookupView<'a>;
}

/// The `wasi:sockets` version wasmtime-wasi's linker provides (it serves every older 0.2
/// import too); `finish-connect` is replaced under this name.
const TCP_INTERFACE: &str = "wasi:sockets/tcp@0.2.12";

/// Replaces the linker's `wasi:sockets/ip-name-lookup` (added with the rest of WASI) by the
/// guarded one, and its `tcp-socket.finish-connect` by one that hands the plugin a stream
/// with the exporter's secrets in its first line.
pub fn add_to_linker(linker: &mut Linker<PluginCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    ip_name_lookup::add_to_linker::<PluginCtx, GuardedLookup>(linker, PluginCtx::lookup_view)?;
    linker.instance(TCP_INTERFACE)?.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store: StoreContextMut<'_, PluginCtx>, (socket,): (Resource<TcpSocket>,)| {
            store.data_mut().finish_connect(socket).map(|r| (r,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What `finish-connect` gives the plugin: the connection's input and output streams.
type Streams = (Resource<DynInputStream>, Resource<DynOutputStream>);

impl PluginCtx {
    fn finish_connect(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<Streams, ErrorCode>> {
        let secrets = self.sockets_guard().egress.socket_secrets.clone();
        let parent = Resource::<TcpSocket>::new_borrow(socket.rep());
        let mut view = self.sockets();
        let (input, output) = match HostTcpSocket::finish_connect(&mut view, socket) {
            Ok(streams) => streams,
            Err(e) => return Ok(Err(network::Host::convert_error_code(&mut view, e)?)),
        };
        if secrets.is_empty() {
            return Ok(Ok((input, output)));
        }
        let inner = view.table.delete(output)?;
        let output = view.table.push_child(secrets.wrap(inner), &parent)?;
        Ok(Ok((input, output)))
    }
}

impl Host for LookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        if !self.guard.allowed().permits_lookup(&name) {
            self.guard
                .deny(&format!("name lookup of {name}"), "not in allowed_hosts");
            return Err(ErrorCode::AccessDenied.into());
        }
        let stream = self.inner.resolve_addresses(network, name.clone())?;
        self.guard.lookup_started(stream.rep(), &name);
        Ok(stream)
    }
}

// Only for the error conversion that ip-name-lookup's bindings require of their host.
impl network::Host for LookupView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        self.inner.convert_error_code(error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        self.inner.network_error_code(err)
    }
}

impl network::HostNetwork for LookupView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.inner, this)
    }
}

impl HostResolveAddressStream for LookupView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let handle = stream.rep();
        let next = self.inner.resolve_next_address(stream)?;
        if let Some(ip) = next {
            self.guard.learn(handle, ip_of(ip));
        }
        Ok(next)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.inner, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.guard.lookup_ended(stream.rep());
        HostResolveAddressStream::drop(&mut self.inner, stream)
    }
}

fn ip_of(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::sender::{HostSender, SenderLimits};
    use crate::plugin::text::{LogGate, LogPolicy};
    use crate::telemetry::Counter;

    fn guard(grants: &[&str]) -> (Arc<SocketGuard>, Counter) {
        let denied = Counter::default();
        let allowed = AllowedHosts::from_config(
            Some(&grants.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            &toml::Table::new(),
        )
        .unwrap();
        let egress = Egress {
            exporter: "x".into(),
            allowed: Arc::new(allowed),
            secrets: Arc::default(),
            socket_secrets: Arc::default(),
            sender: HostSender::new(SenderLimits::default()),
            denied: denied.clone(),
            log: Arc::new(LogGate::new(
                "x".into(),
                LogPolicy::default(),
                Counter::default(),
            )),
        };
        (SocketGuard::new(egress), denied)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_only_to_grants_and_no_listener_ever() {
        let (g, denied) = guard(&["tcp://127.0.0.1:4222", "tcp://nats.test:4222"]);
        assert!(
            g.permits(addr("0.0.0.0:0"), SocketAddrUse::TcpBind),
            "the OS's bind"
        );
        assert!(g.permits(addr("127.0.0.1:4222"), SocketAddrUse::TcpConnect));
        assert_eq!(denied.get(), 0);
        for (a, what) in [
            ("127.0.0.1:4223", SocketAddrUse::TcpConnect),
            ("10.0.0.9:4222", SocketAddrUse::TcpConnect),
            ("0.0.0.0:0", SocketAddrUse::TcpListen),
            ("127.0.0.1:4222", SocketAddrUse::TcpBind),
            ("0.0.0.0:0", SocketAddrUse::UdpBind),
            ("127.0.0.1:4222", SocketAddrUse::UdpSend),
        ] {
            assert!(!g.permits(addr(a), what), "{what:?} {a}");
        }
        assert_eq!(denied.get(), 6);
        // An address a granted name resolved to is reachable on the name's port only.
        g.lookup_started(7, "nats.test");
        g.learn(7, "10.0.0.9".parse().unwrap());
        g.lookup_ended(7);
        assert!(g.permits(addr("10.0.0.9:4222"), SocketAddrUse::TcpConnect));
        assert!(!g.permits(addr("10.0.0.9:22"), SocketAddrUse::TcpConnect));
        // A handle that was not a granted lookup teaches nothing.
        g.learn(8, "10.0.0.10".parse().unwrap());
        assert!(!g.permits(addr("10.0.0.10:4222"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn udp_only_when_granted_and_what_is_learned_stays_bounded() {
        let (g, _) = guard(&["udp://127.0.0.1:8125", "tcp://*.test:1"]);
        assert!(g.permits(addr("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(g.permits(addr("127.0.0.1:8125"), SocketAddrUse::UdpSend));
        assert!(!g.permits(addr("127.0.0.2:8125"), SocketAddrUse::UdpReceive));
        for i in 0..MAX_LOOKUPS as u32 + 10 {
            g.lookup_started(i, "a.test");
        }
        for i in 0..MAX_LEARNED as u32 + 10 {
            g.learn(0, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let state = g.state();
        assert_eq!(state.lookups.len(), MAX_LOOKUPS);
        assert_eq!(state.addresses.len(), MAX_LEARNED);
    }
}
