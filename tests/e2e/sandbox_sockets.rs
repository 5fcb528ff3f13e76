//! Sockets in the sandbox: a plugin reaches the `tcp://` and `udp://` destinations its
//! `allowed_hosts` grants, by address or by a granted name, and nothing else; every other
//! connection, listener, datagram and name lookup fails in the plugin, is counted in
//! `ferry_exporter_egress_denied_total` and logged under the exporter's name.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::eventually;
use crate::sandbox::{hostile, send, setup_with};

/// A TCP server on loopback that keeps every line it is sent, and counts its connections.
struct LineServer {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

impl LineServer {
    fn start() -> LineServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (l, c) = (lines.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                *c.lock().unwrap() += 1;
                let l = l.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        l.lock().unwrap().push(line);
                    }
                });
            }
        });
        LineServer {
            port,
            lines,
            connections,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

fn denied_label(name: &str) -> String {
    format!("exporter=\"{name}\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_reach_what_allowed_hosts_grants_and_nothing_else() {
    let granted = LineServer::start();
    let forbidden = LineServer::start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let (g, f) = (granted.port, forbidden.port);
    let grant = format!("allowed_hosts = [\"tcp://localhost:{g}\", \"tcp://127.0.0.1:{g}\"]");
    let case = |name: &str, mode: &str, url: &str, allowed: &str| {
        hostile(
            name,
            &format!("config = {{ mode = \"{mode}\", url = \"{url}\" }}\n{allowed}"),
        )
    };
    let exporters = [
        // Allowed: by a granted name (looked up by the host) and by a granted address.
        case("tcp-by-name", "tcp", &format!("localhost:{g}"), &grant),
        case("tcp-by-ip", "tcp", &format!("127.0.0.1:{g}"), &grant),
        case(
            "udp-granted",
            "udp",
            &format!("127.0.0.1:{udp_port}"),
            &format!("allowed_hosts = [\"udp://127.0.0.1:{udp_port}\"]"),
        ),
        // Denied.
        case("other-port", "socket", &format!("127.0.0.1:{f}"), &grant),
        case("listen-any", "listen", "0.0.0.0:0", &grant),
        case("listen-port", "listen", &format!("127.0.0.1:{f}"), &grant),
        case("udp-not-granted", "udp", &format!("127.0.0.1:{g}"), &grant),
        case("lookup", "lookup", "ferry-exfil.example.com:443", &grant),
        // A granted name over HTTP is not a granted socket.
        case(
            "http-grant",
            "socket",
            &format!("127.0.0.1:{g}"),
            &format!("allowed_hosts = [\"http://127.0.0.1:{g}\"]"),
        ),
    ]
    .concat();
    let mut s = setup_with("sockets", &exporters, &[]).await;
    let sent = send(&s.ferry, 2, 3).await;
    s.good_gets_everything(&sent).await;

    eventually(
        "both granted exporters wrote to the granted server",
        async || granted.lines().len() >= 4,
    )
    .await;
    assert!(
        granted.lines().iter().all(|l| l == "hostile tcp: 3 items"),
        "{:?}",
        granted.lines()
    );
    let mut datagram = [0u8; 16];
    let (n, _) = udp.recv_from(&mut datagram).expect("the granted datagram");
    assert_eq!(&datagram[..n], b"hostile");
    for name in ["tcp-by-name", "tcp-by-ip", "udp-granted"] {
        let denied = s
            .metric("ferry_exporter_egress_denied_total", &[&denied_label(name)])
            .await;
        assert_eq!(denied, 0, "{name} was refused something");
    }

    for (name, log) in [
        (
            "other-port",
            format!("plugin TCP connect to 127.0.0.1:{f} denied: not in allowed_hosts"),
        ),
        ("listen-any", "plugin TCP listen on 0.0.0.0:".into()),
        (
            "listen-port",
            format!("plugin TCP bind to 127.0.0.1:{f} denied: binding to an address"),
        ),
        (
            "udp-not-granted",
            "plugin UDP bind to 0.0.0.0:0 denied: no udp:// destination in allowed_hosts".into(),
        ),
        (
            "lookup",
            "plugin name lookup of ferry-exfil.example.com denied: not in allowed_hosts".into(),
        ),
        (
            "http-grant",
            format!("plugin TCP connect to 127.0.0.1:{g} denied"),
        ),
    ] {
        s.logged(name, &log).await;
        // Each of the two batches was refused at least once.
        eventually(&format!("{name}'s refusals are counted"), async || {
            s.metric("ferry_exporter_egress_denied_total", &[&denied_label(name)])
                .await
                >= 2
        })
        .await;
        s.logged(name, &format!("hostile {}", mode_of(name))).await;
    }
    assert_eq!(forbidden.connections(), 0, "nothing reached the other port");
    s.alive();
}

/// The hostile mode each denied case runs, as its own log line names it.
fn mode_of(name: &str) -> &'static str {
    match name {
        "other-port" | "http-grant" => "socket",
        "listen-any" | "listen-port" => "listen",
        "udp-not-granted" => "udp",
        _ => "lookup",
    }
}
