//! Secrets the host holds for a plugin. They are resolved once at load, from the environment
//! or files, and put into what the plugin sends on its way out, so the plugin never holds
//! them: `secret_headers` are set on its HTTP requests, and `secrets` replace `${secret:NAME}`
//! in the first line it writes on a TCP connection, where line protocols authenticate (NATS
//! `CONNECT`, Redis `AUTH`, SMTP `AUTH PLAIN`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError};

const ONE_SOURCE: &str = "set exactly one of `env` and `file`";

/// Where a secret's value comes from: exactly one of `env` and `file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Environment variable holding the value.
    pub env: Option<String>,
    /// File holding the value (trailing newline removed).
    pub file: Option<PathBuf>,
    /// Put before the value, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
}

impl SecretSource {
    /// What is wrong with its shape, if anything (checked with the rest of the config).
    pub fn check(&self) -> Option<&'static str> {
        (self.env.is_some() == self.file.is_some()).then_some(ONE_SOURCE)
    }

    /// The value, prefix first; the error says what is missing, never a value.
    pub fn read(&self) -> Result<String, String> {
        let raw = match (&self.env, &self.file) {
            (Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => return Err(ONE_SOURCE.into()),
        };
        Ok(format!("{}{raw}", self.prefix))
    }
}

/// Headers the host adds to a plugin's outgoing requests.
#[derive(Clone, Default)]
pub struct SecretHeaders(Vec<(http::HeaderName, http::HeaderValue)>);

impl std::fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values never reach a log.
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl SecretHeaders {
    /// Resolves every source; the error names the header and what is missing.
    pub fn resolve(sources: &BTreeMap<String, SecretSource>) -> Result<SecretHeaders, String> {
        let mut out = Vec::new();
        for (name, src) in sources {
            let key = format!("secret_headers.{name}");
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{key}: not a valid header name"))?;
            let raw = src.read().map_err(|e| format!("{key}: {e}"))?;
            let mut value = http::HeaderValue::from_str(&raw)
                .map_err(|_| format!("{key}: the value is not a valid header value"))?;
            value.set_sensitive(true);
            out.push((header, value));
        }
        Ok(SecretHeaders(out))
    }

    /// Sets every secret header on `headers`, replacing whatever the plugin put there.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (k, v) in &self.0 {
            headers.insert(k.clone(), v.clone());
        }
    }
}

/// Bytes of a connection's first line the host holds to look for placeholders; a line that
/// does not end within them goes out as it was written.
pub const LINE_MAX: usize = 4096;

/// Longest first line once its placeholders are replaced.
pub const LINE_OUT_MAX: usize = 16 << 10;

/// Longest secret value.
pub const VALUE_MAX: usize = 1024;

const OPEN: &[u8] = b"${secret:";

/// The placeholder a plugin writes for the secret `name`.
pub fn placeholder(name: &str) -> String {
    format!("${{secret:{name}}}")
}

/// Whether `name` can be a secret's name: letters, digits, `_` and `-`, at most 64.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Every `${secret:NAME}` in the strings of a plugin's settings, with the key path it is at.
pub fn named_in(settings: &toml::Table) -> Vec<(String, String)> {
    fn walk(path: String, value: &toml::Value, out: &mut Vec<(String, String)>) {
        match value {
            toml::Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(at) = rest.find("${secret:") {
                    rest = &rest[at + OPEN.len()..];
                    let Some(end) = rest.find('}') else { break };
                    out.push((path.clone(), rest[..end].to_string()));
                    rest = &rest[end..];
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{path}[{i}]"), v, out);
                }
            }
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(format!("{path}.{k}"), v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in settings {
        walk(format!("config.{k}"), v, &mut out);
    }
    out
}

/// Values for the placeholders of a connection's first line.
#[derive(Clone, Default)]
pub struct SocketSecrets(Vec<(Vec<u8>, Vec<u8>)>);

impl std::fmt::Debug for SocketSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| String::from_utf8_lossy(k)))
            .finish()
    }
}

impl SocketSecrets {
    /// Resolves every source. A value goes into a protocol line as it is, so it may hold only
    /// printable ASCII other than space, `"` and `\` (nothing a line or a JSON string would
    /// need escaped).
    pub fn resolve(sources: &BTreeMap<String, SecretSource>) -> Result<SocketSecrets, String> {
        let mut out = Vec::new();
        for (name, src) in sources {
            let key = format!("secrets.{name}");
            if !valid_name(name) {
                return Err(format!(
                    "{key}: a name is letters, digits, `_` and `-`, at most 64"
                ));
            }
            let value = src.read().map_err(|e| format!("{key}: {e}"))?;
            if value.is_empty() || value.len() > VALUE_MAX {
                return Err(format!(
                    "{key}: the value must be 1 to {VALUE_MAX} bytes, not {}",
                    value.len()
                ));
            }
            if !value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(format!(
                    "{key}: the value may hold only printable ASCII other than space, `\"` \
                     and `\\`"
                ));
            }
            out.push((placeholder(name).into_bytes(), value.into_bytes()));
        }
        Ok(SocketSecrets(out))
    }

    /// Whether there is nothing to replace (connections are then left alone).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `line` with every known placeholder replaced; unknown ones stay as written.
    fn substitute(&self, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len());
        let mut rest = line;
        while let Some(at) = rest.windows(OPEN.len()).position(|w| w == OPEN) {
            out.extend_from_slice(&rest[..at]);
            rest = &rest[at..];
            match self.0.iter().find(|(p, _)| rest.starts_with(p)) {
                Some((p, value)) => {
                    out.extend_from_slice(value);
                    rest = &rest[p.len()..];
                }
                None => {
                    out.extend_from_slice(&rest[..OPEN.len()]);
                    rest = &rest[OPEN.len()..];
                }
            }
        }
        out.extend_from_slice(rest);
        out
    }

    /// `inner`, with the first line written to it passed through [`Self::substitute`].
    pub fn wrap(self: &Arc<Self>, inner: DynOutputStream) -> DynOutputStream {
        Box::new(FirstLine {
            inner,
            secrets: self.clone(),
            line: Some(Vec::new()),
            permit: 0,
        })
    }
}

/// A connection's output stream that holds what is written until the first newline (or
/// [`LINE_MAX`] bytes), then writes that line with its placeholders replaced, and passes
/// everything after straight through. A flush before the line ends does not send it: a
/// placeholder must not go out half replaced.
struct FirstLine {
    inner: DynOutputStream,
    secrets: Arc<SocketSecrets>,
    /// The first line so far; `None` once it has gone out.
    line: Option<Vec<u8>>,
    /// What the inner stream last permitted in one write.
    permit: usize,
}

#[async_trait::async_trait]
impl OutputStream for FirstLine {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let Some(line) = &mut self.line else {
            return self.inner.write(bytes);
        };
        if bytes.len() > LINE_MAX - line.len() {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "not permitted to write {} bytes",
                bytes.len()
            )));
        }
        line.extend_from_slice(&bytes);
        let out = match line.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let mut out = self.secrets.substitute(&line[..=end]);
                if out.len() > LINE_OUT_MAX {
                    return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                        "the first line is over {LINE_OUT_MAX} bytes with its secrets"
                    )));
                }
                out.extend_from_slice(&line[end + 1..]);
                out
            }
            None if line.len() == LINE_MAX => std::mem::take(line),
            None => return Ok(()),
        };
        self.line = None;
        if out.len() > self.permit {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the first line with its secrets does not fit one write ({} bytes)",
                out.len()
            )));
        }
        self.inner.write(out.into())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        let permit = self.inner.check_write()?;
        self.permit = permit;
        Ok(match &self.line {
            None => permit,
            Some(line) => permit.min(LINE_MAX - line.len()),
        })
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[async_trait::async_trait]
impl Pollable for FirstLine {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[cfg(test)]
mod tests;
