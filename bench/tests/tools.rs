//! The load generator against the sink directly, over both protocols and every signal: every
//! item the generator saw acknowledged is in the sink's count (the check `run.sh` relies on).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn get_count(addr: &str) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /count HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[test]
fn every_acknowledged_item_is_counted_by_the_sink() {
    let mut sink = Command::new(env!("CARGO_BIN_EXE_ferry-sink"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening ").unwrap().to_string();
    let mut expected = std::collections::BTreeMap::new();
    for (protocol, signal, rate) in [
        ("grpc", "traces", None),
        ("http", "traces", None),
        ("grpc", "metrics", None),
        // Paced: 50 requests of 20 logs at 50k logs/s.
        ("http", "logs", Some("50000")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry-loadgen"));
        cmd.args([
            "--target",
            &addr,
            "--protocol",
            protocol,
            "--signal",
            signal,
        ])
        .args([
            "--items",
            "20",
            "--concurrency",
            "2",
            "--requests",
            "50",
            "--warmup",
            "0",
        ]);
        if let Some(rate) = rate {
            cmd.args(["--rate", rate]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = serde_json::from_str(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("SUMMARY "))
                .expect("a SUMMARY line"),
        )
        .unwrap();
        assert_eq!(summary["errors"], 0, "{stdout}");
        assert_eq!(summary["requests_ok"], 50, "{stdout}");
        *expected.entry(signal).or_insert(0) += summary["acked_items"].as_u64().unwrap();
    }
    let count = get_count(&addr);
    sink.kill().unwrap();
    let _ = sink.wait();
    assert_eq!(expected["traces"], 2000);
    for (signal, n) in expected {
        assert_eq!(count[signal], n, "{signal}: {count}");
    }
    assert_eq!(count["errors"], 0);
}
