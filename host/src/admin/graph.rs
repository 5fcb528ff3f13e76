//! The pipeline as a graph for the status page: nodes in columns from receivers to
//! exporters, edges with the items per second that pass along them.

use serde::Serialize;

use super::layout::Layout;
use super::status::{Figures, ReceiverStatus, SIGNALS};

/// The pipeline as a graph.
#[derive(Debug, Serialize)]
pub struct Graph {
    /// Receivers, processors, queues and exporters.
    pub nodes: Vec<Node>,
    /// Where items go, with how many per second.
    pub edges: Vec<Edge>,
}

/// A node: `id` is `kind:name`.
#[derive(Debug, Serialize)]
pub struct Node {
    /// `receiver:otlp_grpc`, `processor:ingest:NAME`, `queue:traces`, `exporter:NAME`,
    /// `processor:EXPORTER:NAME`.
    pub id: String,
    /// `receiver`, `processor`, `queue` or `exporter`.
    pub kind: &'static str,
    /// Its name.
    pub label: String,
    /// Column from the left (receivers 0).
    pub column: usize,
}

/// An edge.
#[derive(Debug, Serialize)]
pub struct Edge {
    /// A node id.
    pub from: String,
    /// A node id.
    pub to: String,
    /// Items per second, all signals.
    pub items_per_second: f64,
}

/// Receivers (column 0) → the ingest chain's processors → queues → each exporter's chain's
/// processors → exporters (last column).
pub(super) fn graph(f: &Figures<'_>, layout: &Layout, receivers: &[ReceiverStatus]) -> Graph {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let ingest = layout.ingest.len();
    let deepest = layout
        .exporters
        .iter()
        .map(|e| e.processors.len())
        .max()
        .unwrap_or(0);
    for r in receivers {
        nodes.push(Node {
            id: format!("receiver:{}", r.name),
            kind: "receiver",
            label: r.name.clone(),
            column: 0,
        });
    }
    for (i, p) in layout.ingest.iter().enumerate() {
        nodes.push(Node {
            id: format!("processor:ingest:{}", p.name),
            kind: "processor",
            label: p.name.clone(),
            column: 1 + i,
        });
    }
    let used: Vec<&str> = SIGNALS
        .into_iter()
        .filter(|s| {
            layout
                .exporters
                .iter()
                .any(|e| e.signals.iter().any(|x| x == s))
        })
        .collect();
    for s in &used {
        nodes.push(Node {
            id: format!("queue:{s}"),
            kind: "queue",
            label: s.to_string(),
            column: 1 + ingest,
        });
    }
    // Receivers into the chain's first processor, or straight into the queues.
    for r in receivers {
        let l = [("receiver", r.name.as_str())];
        let from = format!("receiver:{}", r.name);
        match layout.ingest.first() {
            Some(p) => edges.push(Edge {
                from,
                to: format!("processor:ingest:{}", p.name),
                items_per_second: f.rate("ferry_receiver_accepted_items_total", &l),
            }),
            None => {
                for s in &used {
                    edges.push(Edge {
                        from: from.clone(),
                        to: format!("queue:{s}"),
                        items_per_second: f.rate(
                            "ferry_receiver_accepted_items_total",
                            &[l[0], ("signal", s)],
                        ),
                    });
                }
            }
        }
    }
    let passed = |name: &str, signal: Option<&str>| {
        let mut with = vec![("processor", name)];
        with.extend(signal.map(|s| ("signal", s)));
        ["kept", "modified"]
            .iter()
            .map(|o| {
                let mut w = with.clone();
                w.push(("outcome", o));
                f.rate("ferry_processor_items_total", &w)
            })
            .sum::<f64>()
    };
    for (i, p) in layout.ingest.iter().enumerate() {
        let from = format!("processor:ingest:{}", p.name);
        match layout.ingest.get(i + 1) {
            Some(next) => edges.push(Edge {
                from,
                to: format!("processor:ingest:{}", next.name),
                items_per_second: passed(&p.name, None),
            }),
            None => {
                for s in &used {
                    edges.push(Edge {
                        from: from.clone(),
                        to: format!("queue:{s}"),
                        items_per_second: passed(&p.name, Some(s)),
                    });
                }
            }
        }
    }
    let last = 2 + ingest + deepest;
    for e in &layout.exporters {
        let exporter = format!("exporter:{}", e.name);
        nodes.push(Node {
            id: exporter.clone(),
            kind: "exporter",
            label: e.name.clone(),
            column: last,
        });
        let l = [("exporter", e.name.as_str())];
        for (i, p) in e.processors.iter().enumerate() {
            nodes.push(Node {
                id: format!("processor:{}:{}", e.name, p.name),
                kind: "processor",
                label: p.name.clone(),
                column: 2 + ingest + i,
            });
        }
        let ids: Vec<String> = e
            .processors
            .iter()
            .map(|p| format!("processor:{}:{}", e.name, p.name))
            .chain([exporter])
            .collect();
        for s in e.signals.iter().filter(|s| used.contains(&s.as_str())) {
            let w = [l[0], ("signal", s.as_str())];
            // What the exporter takes from the queue: sent, given up on, or dropped by its chain.
            let chain_dropped: f64 = e
                .processors
                .iter()
                .map(|p| {
                    f.rate(
                        "ferry_processor_items_total",
                        &[("processor", p.name.as_str()), w[1], ("outcome", "dropped")],
                    )
                })
                .sum();
            edges.push(Edge {
                from: format!("queue:{s}"),
                to: ids[0].clone(),
                items_per_second: f.rate("ferry_exporter_sent_items_total", &w)
                    + f.rate("ferry_exporter_dropped_items_total", &w)
                    + chain_dropped,
            });
        }
        for (i, p) in e.processors.iter().enumerate() {
            edges.push(Edge {
                from: ids[i].clone(),
                to: ids[i + 1].clone(),
                items_per_second: passed(&p.name, None),
            });
        }
    }
    Graph { nodes, edges }
}
