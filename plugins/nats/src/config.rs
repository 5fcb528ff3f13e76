//! The `nats` exporter's config, checked whole at `init`: every problem is named at once.

use std::time::Duration;

use serde::Deserialize;

/// How batches are spread over subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One subject per signal: any gateway may take any message.
    #[default]
    WorkQueue,
    /// `shards` subjects per signal, items placed by trace id (or resource).
    ByTrace,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    endpoint: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default = "default_stream")]
    stream: String,
    #[serde(default = "default_prefix")]
    subject_prefix: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default = "default_shards")]
    shards: u32,
    create_stream: Option<RawCreate>,
    #[serde(default = "default_ack_timeout")]
    ack_timeout: String,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCreate {
    #[serde(default = "one")]
    replicas: u32,
    max_bytes: Option<serde_json::Value>,
    max_age: Option<String>,
    #[serde(default = "default_window")]
    duplicate_window: String,
}

fn default_stream() -> String {
    "FERRY".into()
}
fn default_prefix() -> String {
    "ferry".into()
}
fn default_shards() -> u32 {
    16
}
fn default_ack_timeout() -> String {
    "5s".into()
}
fn default_window() -> String {
    "2m".into()
}
fn one() -> u32 {
    1
}

/// What `init` accepted.
pub struct Config {
    /// `host:port` of each server, tried in turn.
    pub servers: Vec<String>,
    pub stream: String,
    pub subject_prefix: String,
    pub mode: Mode,
    pub shards: u32,
    pub create_stream: Option<CreateStream>,
    /// How long to wait for a connection, and for JetStream's acknowledgements.
    pub ack_timeout: Duration,
    /// Credentials for `CONNECT`, when the servers require them.
    pub auth: Option<Auth>,
}

/// Credentials, whose secret part is a `${secret:NAME}` placeholder: the host writes the value
/// in its place on the way out, so this plugin never holds it.
#[derive(Debug, PartialEq, Eq)]
pub enum Auth {
    UserPassword { user: String, password: String },
    Token(String),
}

impl Auth {
    /// The fields of `CONNECT` that carry these credentials.
    pub fn connect_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let pairs = match self {
            Auth::UserPassword { user, password } => vec![("user", user), ("pass", password)],
            Auth::Token(token) => vec![("auth_token", token)],
        };
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.as_str().into()))
            .collect()
    }
}

/// The stream to create when it does not exist.
pub struct CreateStream {
    replicas: u32,
    max_bytes: i64,
    max_age: Duration,
    duplicate_window: Duration,
}

impl CreateStream {
    /// The body of `$JS.API.STREAM.CREATE`: a work queue (a message leaves once a gateway
    /// acknowledged it) that refuses new messages when full (`discard: new`), so a full stream
    /// pushes back on the agents, whose queues hold the data, instead of dropping any.
    pub fn request(&self, stream: &str, prefix: &str) -> serde_json::Value {
        serde_json::json!({
            "name": stream,
            "subjects": [format!("{prefix}.>")],
            "retention": "workqueue",
            "storage": "file",
            "discard": "new",
            "num_replicas": self.replicas,
            "max_bytes": self.max_bytes,
            "max_age": self.max_age.as_nanos() as u64,
            "duplicate_window": self.duplicate_window.as_nanos() as u64,
        })
    }
}

impl Config {
    /// Parses and checks the JSON config `init` gets.
    pub fn parse(json: &str) -> Result<Config, String> {
        let raw: Raw = ferry_sdk::parse_config(json)?;
        let mut errors = Vec::new();
        let mut urls: Vec<(String, &String)> = raw
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("endpoints[{i}]"), u))
            .collect();
        if let Some(u) = &raw.endpoint {
            urls.insert(0, ("endpoint".into(), u));
        }
        if urls.is_empty() {
            errors.push("endpoint (or endpoints) is required: nats://host:port".to_string());
        }
        let servers: Vec<String> = urls
            .iter()
            .filter_map(|(key, url)| {
                server(url)
                    .map_err(|e| errors.push(format!("{key}: {e}")))
                    .ok()
            })
            .collect();
        if !token_ok(&raw.stream) {
            errors.push(format!(
                "stream: {:?} is not a stream name (letters, digits, - and _)",
                raw.stream
            ));
        }
        if raw.subject_prefix.is_empty() || !raw.subject_prefix.split('.').all(token_ok) {
            errors.push(format!(
                "subject_prefix: {:?} is not a subject (tokens of letters, digits, - and _, joined by dots)",
                raw.subject_prefix
            ));
        }
        if !(1..=1024).contains(&raw.shards) {
            errors.push(format!("shards: {} is not between 1 and 1024", raw.shards));
        }
        let ack_timeout = duration("ack_timeout", &raw.ack_timeout, &mut errors);
        let auth = auth(raw.user, raw.password, raw.token, &mut errors);
        let create_stream = raw.create_stream.map(|c| {
            if !(1..=5).contains(&c.replicas) {
                errors.push(format!(
                    "create_stream.replicas: {} is not between 1 and 5",
                    c.replicas
                ));
            }
            let max_bytes = match &c.max_bytes {
                None => -1,
                Some(v) => bytes(v).unwrap_or_else(|e| {
                    errors.push(format!("create_stream.max_bytes: {e}"));
                    -1
                }),
            };
            CreateStream {
                replicas: c.replicas,
                max_bytes,
                max_age: c.max_age.as_deref().map_or(Duration::ZERO, |s| {
                    duration("create_stream.max_age", s, &mut errors)
                }),
                duplicate_window: duration(
                    "create_stream.duplicate_window",
                    &c.duplicate_window,
                    &mut errors,
                ),
            }
        });
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Config {
            servers,
            stream: raw.stream,
            subject_prefix: raw.subject_prefix,
            mode: raw.mode,
            shards: raw.shards,
            create_stream,
            ack_timeout,
            auth,
        })
    }
}

/// `user` with `password`, or `token`, their secret parts as placeholders.
fn auth(
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    errors: &mut Vec<String>,
) -> Option<Auth> {
    let placeholder = |key: &str, v: &String, errors: &mut Vec<String>| {
        let ok = v.starts_with("${secret:") && v.ends_with('}') && v.matches('$').count() == 1;
        if !ok {
            errors.push(format!(
                "{key}: write a placeholder, \"${{secret:NAME}}\", and put the value in the \
                 exporter's `secrets` table, so that the host holds it and this plugin never does"
            ));
        }
    };
    match (user, password, token) {
        (None, None, None) => None,
        (Some(user), Some(password), None) => {
            placeholder("password", &password, errors);
            if user.is_empty() || user.contains(['"', '\\']) {
                errors.push(format!("user: {user:?} is not a user name"));
            }
            Some(Auth::UserPassword { user, password })
        }
        (None, None, Some(token)) => {
            placeholder("token", &token, errors);
            Some(Auth::Token(token))
        }
        (_, _, Some(_)) => {
            errors.push("token: set either user and password, or token, not both".into());
            None
        }
        (Some(_), None, None) => {
            errors.push("password: user is set, password is not".into());
            None
        }
        (None, Some(_), None) => {
            errors.push("user: password is set, user is not".into());
            None
        }
    }
}

/// `nats://host[:port]` (or `tcp://`) as `host:port`.
fn server(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{url:?} is not a nats://host:port URL"))?
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@']) {
        return Err(format!(
            "{url:?} is not a nats://host:port URL (credentials do not go in the URL)"
        ));
    }
    let has_port = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (rest.starts_with('[') == h.ends_with(']')) => {
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: invalid port {p:?}"))?;
            true
        }
        _ => false,
    };
    Ok(if has_port {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    })
}

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn duration(key: &str, s: &str, errors: &mut Vec<String>) -> Duration {
    let parsed = [("ms", 1u64), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        .iter()
        .find_map(|(unit, ms)| {
            let n: u64 = s.strip_suffix(unit)?.parse().ok()?;
            Some(Duration::from_millis(n * ms))
        })
        .filter(|d| !d.is_zero());
    parsed.unwrap_or_else(|| {
        errors.push(format!(
            "{key}: {s:?} is not a duration like \"500ms\", \"5s\", \"2m\" or \"24h\""
        ));
        Duration::from_secs(1)
    })
}

fn bytes(v: &serde_json::Value) -> Result<i64, String> {
    if let Some(n) = v.as_i64().filter(|n| *n > 0) {
        return Ok(n);
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("{v} is not a size like \"1GiB\""))?;
    [
        ("KiB", 1i64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("B", 1),
    ]
    .iter()
    .find_map(|(unit, m)| Some(s.strip_suffix(unit)?.trim().parse::<i64>().ok()? * m))
    .filter(|n| *n > 0)
    .ok_or_else(|| format!("{s:?} is not a size like \"512MiB\" or \"1GiB\""))
}

/// Whether NATS subject pattern `pattern` (with `*` and `>` wildcards) takes `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for p in pattern.split('.') {
        match (p, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_named_at_once() {
        let e = Config::parse(
            r#"{"endpoints": ["http://x:1", "nats://h:99999"], "stream": "a.b", "shards": 0,
                "ack_timeout": "soon", "create_stream": {"replicas": 7, "max_bytes": "lots"}}"#,
        )
        .err()
        .unwrap();
        for needle in [
            "endpoints[0]",
            "endpoints[1]",
            "stream:",
            "shards:",
            "ack_timeout:",
            "create_stream.replicas",
            "create_stream.max_bytes",
        ] {
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
        assert!(
            Config::parse("{}")
                .err()
                .unwrap()
                .contains("endpoint (or endpoints) is required")
        );
    }

    #[test]
    fn defaults_and_ports() {
        let c = Config::parse(
            r#"{"endpoint": "nats://127.0.0.1", "endpoints": ["nats://[::1]:4333"]}"#,
        )
        .unwrap();
        assert_eq!(c.servers, ["127.0.0.1:4222", "[::1]:4333"]);
        assert_eq!(
            (c.stream.as_str(), c.subject_prefix.as_str(), c.shards),
            ("FERRY", "ferry", 16)
        );
        assert_eq!(c.mode, Mode::WorkQueue);
        assert_eq!(c.ack_timeout, Duration::from_secs(5));
        let c = Config::parse(r#"{"endpoint": "nats://h:1", "mode": "by_trace", "create_stream": {"replicas": 3, "max_bytes": "1GiB", "max_age": "24h"}}"#).unwrap();
        let req = c.create_stream.unwrap().request("S", "p");
        assert_eq!(req["max_bytes"], 1i64 << 30);
        assert_eq!(req["num_replicas"], 3);
        assert_eq!(req["subjects"][0], "p.>");
        assert_eq!(req["discard"], "new");
    }

    #[test]
    fn credentials_are_placeholders_the_host_fills_in() {
        let c = Config::parse(
            r#"{"endpoint": "nats://h", "user": "ferry", "password": "${secret:nats_pw}"}"#,
        )
        .unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(
            serde_json::Value::Object(auth.connect_fields()),
            serde_json::json!({"user": "ferry", "pass": "${secret:nats_pw}"})
        );
        let c = Config::parse(r#"{"endpoint": "nats://h", "token": "${secret:t}"}"#).unwrap();
        assert_eq!(c.auth, Some(Auth::Token("${secret:t}".into())));
        for (json, needle) in [
            (
                r#""user": "u", "password": "hunter2""#,
                "password: write a placeholder",
            ),
            (r#""token": "abc""#, "token: write a placeholder"),
            (r#""user": "u""#, "password: user is set"),
            (r#""password": "${secret:p}""#, "user: password is set"),
            (
                r#""user": "u", "password": "${secret:p}", "token": "${secret:t}""#,
                "not both",
            ),
        ] {
            let e = Config::parse(&format!(r#"{{"endpoint": "nats://h", {json}}}"#))
                .err()
                .unwrap();
            assert!(e.contains(needle), "{needle} missing from {e}");
        }
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("ferry.>", "ferry.traces.3"));
        assert!(subject_matches("ferry.*", "ferry.traces"));
        assert!(!subject_matches("ferry.*", "ferry.traces.3"));
        assert!(!subject_matches("ferry.>", "ferry"));
        assert!(subject_matches("ferry.traces", "ferry.traces"));
        assert!(!subject_matches("other.>", "ferry.traces"));
    }
}
