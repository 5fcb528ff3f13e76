//! The NATS client protocol, as much of it as publishing to JetStream needs: `INFO`/`CONNECT`,
//! `HPUB` with a reply subject, and the `MSG`/`HMSG` answers that come back on this
//! connection's inbox (PubAcks and JetStream API replies). Blocking, one call at a time, with
//! a deadline on everything; whatever the server sends is bounded before it is read.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use ferry_sdk::net::TcpStream;

use crate::config::Auth;
use serde::Deserialize;

/// The longest protocol line read (an `INFO` with a large cluster's URLs fits).
const MAX_LINE: usize = 64 << 10;
/// The largest message payload accepted back (PubAcks and API replies are small).
const MAX_REPLY: usize = 1 << 20;

/// What went wrong, by what the exporter should do about it.
#[derive(Debug)]
pub enum NatsError {
    /// The connection is unusable: drop it, and retry the batch on a new one.
    Connection(String),
    /// The server or JetStream refused something: retry later.
    Refused(String),
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsError::Connection(m) | NatsError::Refused(m) => f.write_str(m),
        }
    }
}

fn conn_err(what: impl std::fmt::Display) -> NatsError {
    NatsError::Connection(what.to_string())
}

#[derive(Deserialize)]
struct Info {
    #[serde(default = "default_max_payload")]
    max_payload: usize,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    auth_required: bool,
}

fn default_max_payload() -> usize {
    1 << 20
}

/// One message to publish: subject, id for JetStream de-duplication, payload.
pub struct Outgoing {
    pub subject: String,
    pub id: String,
    pub payload: Vec<u8>,
}

/// A connection to one server of the cluster.
pub struct Conn {
    io: BufReader<TcpStream>,
    /// The server's limit on a message (header and payload).
    pub max_payload: usize,
    /// The server's address, for messages.
    pub server: String,
    inbox: String,
    timeout: Duration,
}

/// A reply read from the inbox: the token after the inbox prefix, the status of a header-only
/// reply (503: no responders), and the payload.
struct Reply {
    token: String,
    status: Option<u16>,
    payload: Vec<u8>,
}

impl Conn {
    /// Connects to `server` (`host:port`) and completes the handshake within `timeout`;
    /// `inbox` must be unique to this connection.
    pub fn connect(
        server: &str,
        inbox: String,
        timeout: Duration,
        auth: Option<&Auth>,
    ) -> Result<Conn, NatsError> {
        let stream = TcpStream::connect(server, timeout)
            .map_err(|e| conn_err(format!("connecting to {server}: {e}")))?;
        let mut conn = Conn {
            io: BufReader::new(stream),
            max_payload: default_max_payload(),
            server: server.to_string(),
            inbox,
            timeout,
        };
        let line = conn.line()?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| conn_err(format!("{server} did not greet with INFO: {}", cut(&line))))?;
        let info: Info = serde_json::from_str(info)
            .map_err(|e| conn_err(format!("{server}: unreadable INFO: {e}")))?;
        if !info.headers {
            return Err(conn_err(format!(
                "{server} does not support message headers (NATS 2.2 or later is needed)"
            )));
        }
        if info.auth_required && auth.is_none() {
            return Err(NatsError::Refused(format!(
                "{server} requires authentication: set user and password, or token"
            )));
        }
        conn.max_payload = info.max_payload;
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "headers": true, "no_responders": true,
            "lang": "ferry-nats-plugin", "version": env!("CARGO_PKG_VERSION"), "protocol": 1,
        });
        if let (Some(auth), Some(fields)) = (auth, connect.as_object_mut()) {
            fields.extend(auth.connect_fields());
        }
        let sub = format!("SUB {}.* 1\r\n", conn.inbox);
        conn.write(format!("CONNECT {connect}\r\n{sub}PING\r\n").as_bytes())?;
        let deadline = Instant::now() + timeout;
        // The PONG confirms the CONNECT and the SUB were taken (an -ERR comes first if not).
        while conn.next_reply(deadline, true)?.is_some() {}
        Ok(conn)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), NatsError> {
        self.io
            .get_mut()
            .write_all(bytes)
            .map_err(|e| conn_err(format!("{}: {e}", self.server)))
    }

    /// Publishes every message with a reply subject of its own, then waits for every answer.
    /// Each result is the PubAck's JSON or why there is none.
    pub fn publish_all(
        &mut self,
        msgs: &[Outgoing],
    ) -> Result<Vec<Result<Vec<u8>, String>>, NatsError> {
        let mut out = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let header = format!("NATS/1.0\r\nNats-Msg-Id: {}\r\n\r\n", m.id);
            let total = header.len() + m.payload.len();
            if total > self.max_payload {
                return Err(NatsError::Refused(format!(
                    "a message of {total} bytes is over the server's max_payload ({})",
                    self.max_payload
                )));
            }
            out.extend_from_slice(
                format!(
                    "HPUB {} {}.{i} {} {total}\r\n",
                    m.subject,
                    self.inbox,
                    header.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(&m.payload);
            out.extend_from_slice(b"\r\n");
        }
        self.write(&out)?;
        let mut answers: Vec<Option<Result<Vec<u8>, String>>> =
            (0..msgs.len()).map(|_| None).collect();
        let deadline = Instant::now() + self.timeout;
        let mut left = msgs.len();
        while left > 0 {
            let Some(reply) = self.next_reply(deadline, false)? else {
                continue;
            };
            let Some(slot) = reply
                .token
                .parse::<usize>()
                .ok()
                .and_then(|i| answers.get_mut(i))
            else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            *slot = Some(match reply.status {
                Some(503) => Err(format!(
                    "no JetStream stream takes subject {}",
                    msgs[reply.token.parse::<usize>().unwrap_or(0)].subject
                )),
                Some(code) => Err(format!("status {code} from the server")),
                None => Ok(reply.payload),
            });
            left -= 1;
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer".into())))
            .collect())
    }

    /// A JetStream API request (`$JS.API....`) and its JSON reply.
    pub fn request(&mut self, subject: &str, body: &[u8]) -> Result<serde_json::Value, NatsError> {
        let msg = Outgoing {
            subject: subject.to_string(),
            id: format!("api-{}", self.inbox),
            payload: body.to_vec(),
        };
        // An API request has no business with de-duplication, but a header does no harm.
        match self.publish_all(std::slice::from_ref(&msg))?.pop() {
            Some(Ok(json)) => serde_json::from_slice(&json)
                .map_err(|e| NatsError::Refused(format!("{subject}: unreadable reply: {e}"))),
            Some(Err(e)) => Err(NatsError::Refused(format!(
                "{subject}: {e} (is JetStream enabled?)"
            ))),
            None => Err(NatsError::Refused(format!("{subject}: no reply"))),
        }
    }

    /// Reads until the next message for the inbox (`Some`), or a `PONG` when `until_pong`
    /// (`None`); answers the server's `PING`s on the way.
    fn next_reply(
        &mut self,
        deadline: Instant,
        until_pong: bool,
    ) -> Result<Option<Reply>, NatsError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(conn_err(format!(
                    "{}: no answer within {:?}",
                    self.server, self.timeout
                )));
            }
            self.io.get_ref().set_timeout(left).map_err(conn_err)?;
            let line = self.line()?;
            let mut words = line.split_ascii_whitespace();
            match words.next().unwrap_or("") {
                "PING" => self.write(b"PONG\r\n")?,
                "PONG" if until_pong => return Ok(None),
                "PONG" | "+OK" | "INFO" => {}
                "-ERR" => return Err(conn_err(format!("{}: {}", self.server, cut(&line)))),
                op @ ("MSG" | "HMSG") => {
                    let args: Vec<&str> = words.collect();
                    return self.message(op == "HMSG", &args, &line).map(Some);
                }
                _ => {
                    return Err(conn_err(format!(
                        "{}: unexpected {:?}",
                        self.server,
                        cut(&line)
                    )));
                }
            }
        }
    }

    fn message(&mut self, headers: bool, args: &[&str], line: &str) -> Result<Reply, NatsError> {
        let bad = || conn_err(format!("{}: malformed {:?}", self.server, cut(line)));
        // MSG subject sid [reply] len / HMSG subject sid [reply] hlen len
        let sizes = if headers { 2 } else { 1 };
        if args.len() < 2 + sizes {
            return Err(bad());
        }
        let nums: Vec<usize> = args[args.len() - sizes..]
            .iter()
            .map(|n| n.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (header_len, total) = if headers {
            (nums[0], nums[1])
        } else {
            (0, nums[0])
        };
        if total > MAX_REPLY || header_len > total {
            return Err(bad());
        }
        let mut data = vec![0u8; total + 2];
        self.io
            .read_exact(&mut data)
            .map_err(|e| conn_err(format!("{}: {e}", self.server)))?;
        data.truncate(total);
        let token = args[0]
            .strip_prefix(&self.inbox)
            .and_then(|t| t.strip_prefix('.'))
            .unwrap_or("")
            .to_string();
        let status = (header_len > 0)
            .then(|| {
                let head = std::str::from_utf8(&data[..header_len]).ok()?;
                let first = head.lines().next()?;
                first.split_ascii_whitespace().nth(1)?.parse::<u16>().ok()
            })
            .flatten();
        Ok(Reply {
            token,
            status,
            payload: data.split_off(header_len),
        })
    }

    /// One protocol line, without its `\r\n`, at most [`MAX_LINE`] bytes.
    fn line(&mut self) -> Result<String, NatsError> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| conn_err(format!("{}: {e}", self.server)))?;
        if n == 0 {
            return Err(conn_err(format!("{} closed the connection", self.server)));
        }
        if line.last() != Some(&b'\n') {
            return Err(conn_err(format!(
                "{}: a protocol line over {MAX_LINE} bytes",
                self.server
            )));
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }
}

/// A server's text, cut short for an error message.
fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}
