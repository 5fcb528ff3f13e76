//! Egress policy: which destinations an exporter's plugin may reach.
//!
//! Parsed here from the exporter's config, enforced by the host's HTTP hooks
//! (see [`super::ctx`]).

use std::path::PathBuf;

use http::Uri;
use serde::{Deserialize, Serialize};

/// Where a secret header's value comes from: exactly one of `env` and `file`.
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

/// A destination pattern: `scheme://host:port`, with `*` as the port and a leading `*.` for
/// any subdomain. A pattern without a port means the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: HostMatch,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com`, not `example.com` itself.
    Suffix(String),
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl HostPattern {
    /// Parses a pattern, with a message fit for a config error.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?}: expected scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{s:?}: scheme must be http or https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("{s:?}: a host pattern has no path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                let port = if p == "*" {
                    None
                } else {
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| format!("{s:?}: invalid port {p:?}"))?,
                    )
                };
                (h, port)
            }
            _ => (rest, Some(default_port(&scheme))),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: empty host"));
        }
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() => HostMatch::Suffix(suffix.to_string()),
            _ if host.contains('*') => {
                return Err(format!(
                    "{s:?}: `*` is only allowed as a leading `*.` or as the port"
                ));
            }
            _ => HostMatch::Exact(host),
        };
        Ok(HostPattern { scheme, host, port })
    }

    /// Whether `uri` falls under this pattern.
    pub fn matches(&self, uri: &Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        let port = uri.port_u16().unwrap_or(default_port(&self.scheme));
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostMatch::Exact(h) => *h == host,
            HostMatch::Suffix(s) => host.len() > s.len() + 1 && host.ends_with(&format!(".{s}")),
        }
    }
}

/// The destinations one exporter may reach.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    /// From explicit patterns, or by default from every `*endpoint` URL in the plugin config.
    pub fn from_config(
        explicit: Option<&[String]>,
        plugin_config: &toml::Table,
    ) -> Result<AllowedHosts, String> {
        if let Some(list) = explicit {
            return list
                .iter()
                .map(|s| HostPattern::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map(AllowedHosts);
        }
        let mut patterns = Vec::new();
        for (key, value) in plugin_config {
            if let (true, Some(url)) = (key.ends_with("endpoint"), value.as_str()) {
                let uri: Uri = url
                    .parse()
                    .map_err(|e| format!("config.{key}: invalid URL {url:?}: {e}"))?;
                let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
                    return Err(format!("config.{key}: {url:?} is not an absolute URL"));
                };
                patterns.push(HostPattern::parse(&format!("{scheme}://{authority}"))?);
            }
        }
        Ok(AllowedHosts(patterns))
    }

    /// Whether any pattern admits `uri`.
    pub fn permits(&self, uri: &Uri) -> bool {
        self.0.iter().any(|p| p.matches(uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn exact_host_and_port() {
        let p = HostPattern::parse("http://127.0.0.1:4318").unwrap();
        assert!(p.matches(&uri("http://127.0.0.1:4318/v1/traces")));
        assert!(!p.matches(&uri("http://127.0.0.1:4319/v1/traces")));
        assert!(!p.matches(&uri("https://127.0.0.1:4318/")));
        assert!(!p.matches(&uri("http://localhost:4318/")));
    }

    #[test]
    fn default_port_and_wildcards() {
        let p = HostPattern::parse("https://api.example.com").unwrap();
        assert!(p.matches(&uri("https://api.example.com/x")));
        assert!(p.matches(&uri("https://api.example.com:443/x")));
        assert!(!p.matches(&uri("https://api.example.com:8443/x")));
        let w = HostPattern::parse("https://*.example.com:*").unwrap();
        assert!(w.matches(&uri("https://a.b.example.com:9/")));
        assert!(!w.matches(&uri("https://example.com/")));
        assert!(!w.matches(&uri("https://evilexample.com/")));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("http://a*b.com").is_err());
        assert!(HostPattern::parse("http://x:99999").is_err());
    }

    #[test]
    fn secrets_come_from_files_or_the_environment_and_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "file-secret\n").unwrap();
        let sources = std::collections::BTreeMap::from([
            (
                "x-api-key".to_string(),
                SecretSource {
                    env: None,
                    file: Some(file),
                    prefix: String::new(),
                },
            ),
            (
                "authorization".to_string(),
                SecretSource {
                    env: Some("PATH".into()),
                    file: None,
                    prefix: "Bearer ".into(),
                },
            ),
        ]);
        let secrets = SecretHeaders::resolve(&sources).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", "the plugin's own".parse().unwrap());
        secrets.apply(&mut headers);
        assert_eq!(headers["x-api-key"], "file-secret", "the host's value wins");
        assert!(
            headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("Bearer /")
        );
        assert!(headers["x-api-key"].is_sensitive());
        assert!(!format!("{secrets:?}").contains("file-secret"));

        let missing = std::collections::BTreeMap::from([(
            "authorization".to_string(),
            SecretSource {
                env: Some("FERRY_SURELY_UNSET_VARIABLE".into()),
                file: None,
                prefix: String::new(),
            },
        )]);
        let err = SecretHeaders::resolve(&missing).unwrap_err();
        assert!(
            err.contains("FERRY_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
    }

    #[test]
    fn defaults_to_endpoint_hosts() {
        let cfg: toml::Table = toml::from_str(
            "endpoint = \"http://127.0.0.1:14318\"\nlogs_endpoint = \"https://logs.example.com/v1/logs\"",
        )
        .unwrap();
        let a = AllowedHosts::from_config(None, &cfg).unwrap();
        assert!(a.permits(&uri("http://127.0.0.1:14318/v1/traces")));
        assert!(a.permits(&uri("https://logs.example.com/v1/logs")));
        assert!(!a.permits(&uri("http://127.0.0.1:8888/metrics")));
        let none = AllowedHosts::from_config(None, &toml::Table::new()).unwrap();
        assert!(!none.permits(&uri("http://127.0.0.1:1/")));
    }
}

/// Headers the host adds to a plugin's outgoing requests; resolved once at load, from the
/// environment or files, so the plugin never sees them.
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
    /// Resolves every source; the error names the header and what is missing, never a value.
    pub fn resolve(
        sources: &std::collections::BTreeMap<String, SecretSource>,
    ) -> Result<SecretHeaders, String> {
        let mut out = Vec::new();
        for (name, src) in sources {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("secret_headers.{name}: not a valid header name"))?;
            let raw = match (&src.env, &src.file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    format!("secret_headers.{name}: environment variable {var} is not set")
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!("secret_headers.{name}: cannot read {}: {e}", path.display())
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                _ => {
                    return Err(format!(
                        "secret_headers.{name}: set exactly one of `env` and `file`"
                    ));
                }
            };
            let mut value =
                http::HeaderValue::from_str(&format!("{}{raw}", src.prefix)).map_err(|_| {
                    format!("secret_headers.{name}: the value is not a valid header value")
                })?;
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
