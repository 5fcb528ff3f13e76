//! Egress policy: which destinations an exporter's plugin may reach.
//!
//! Parsed here from the exporter's config, enforced by the host's HTTP hooks
//! (see [`super::ctx`]) and its socket checks (see [`super::sockets`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::Uri;

/// A destination pattern: `scheme://host:port`, with `*` as the port and a leading `*.` for
/// any subdomain. `http` and `https` grant HTTP requests, and a pattern of theirs without a
/// port means the scheme's default port; `tcp` and `udp` grant sockets, and need a port.
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
        if !["http", "https", "tcp", "udp"].contains(&scheme.as_str()) {
            return Err(format!("{s:?}: scheme must be http, https, tcp or udp"));
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
            _ if Transport::of(&scheme).is_some() => {
                return Err(format!(
                    "{s:?}: a {scheme}:// pattern needs a port (a number or `*`)"
                ));
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
        self.port_matches(port) && self.host_matches(host)
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether `host` (a name, or an IP literal as a URI writes it) falls under the pattern.
    fn host_matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match &self.host {
            HostMatch::Exact(h) => *h == host,
            HostMatch::Suffix(s) => host.len() > s.len() + 1 && host.ends_with(&format!(".{s}")),
        }
    }

    /// The address the pattern names, if its host is an IP literal.
    fn ip(&self) -> Option<IpAddr> {
        match &self.host {
            HostMatch::Exact(h) => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| ip.to_canonical()),
            HostMatch::Suffix(_) => None,
        }
    }
}

/// A socket's protocol, as `allowed_hosts` grants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `tcp://host:port`: outbound connections.
    Tcp,
    /// `udp://host:port`: datagrams to and from.
    Udp,
}

impl Transport {
    fn of(scheme: &str) -> Option<Transport> {
        match scheme {
            "tcp" => Some(Transport::Tcp),
            "udp" => Some(Transport::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        })
    }
}

/// The destinations one exporter may reach.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    /// From explicit patterns, or by default from every `*endpoint` URL in the plugin config
    /// (and every URL in a `*endpoints` list): `http(s)://` grants requests to its host and
    /// port, `tcp://` and `nats://` (port 4222 if none) a TCP connection.
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
            let urls: Vec<(String, &str)> = match value {
                toml::Value::String(url) if key.ends_with("endpoint") => {
                    vec![(key.clone(), url.as_str())]
                }
                toml::Value::Array(list) if key.ends_with("endpoints") => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some((format!("{key}[{i}]"), v.as_str()?)))
                    .collect(),
                _ => continue,
            };
            for (key, url) in urls {
                patterns.push(endpoint_pattern(url).map_err(|e| format!("config.{key}: {e}"))?);
            }
        }
        Ok(AllowedHosts(patterns))
    }

    /// Whether any pattern admits `uri`.
    pub fn permits(&self, uri: &Uri) -> bool {
        self.0.iter().any(|p| p.matches(uri))
    }

    /// Whether any pattern grants sockets of `transport`.
    pub fn grants(&self, transport: Transport) -> bool {
        self.sockets(transport).next().is_some()
    }

    /// Whether a plugin may look up `name`: a `tcp://` or `udp://` pattern names it (an IP
    /// literal needs no lookup, and is always answered).
    pub fn permits_lookup(&self, name: &str) -> bool {
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
            || [Transport::Tcp, Transport::Udp]
                .into_iter()
                .any(|t| self.sockets(t).any(|p| p.host_matches(name)))
    }

    /// Whether a socket of `transport` may reach `addr`, an IP literal of a pattern or an
    /// address one of `names` (names the plugin looked up and got `addr` for) resolved to.
    pub fn permits_socket(
        &self,
        transport: Transport,
        addr: SocketAddr,
        names: &[Arc<str>],
    ) -> bool {
        let ip = addr.ip().to_canonical();
        self.sockets(transport).any(|p| {
            p.port_matches(addr.port())
                && (p.ip() == Some(ip) || names.iter().any(|n| p.host_matches(n)))
        })
    }

    fn sockets(&self, transport: Transport) -> impl Iterator<Item = &HostPattern> {
        self.0
            .iter()
            .filter(move |p| Transport::of(&p.scheme) == Some(transport))
    }
}

/// The pattern an endpoint URL in a plugin's config grants.
fn endpoint_pattern(url: &str) -> Result<HostPattern, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("{url:?} is not an absolute URL"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "nats" => HostPattern::parse(&format!(
            "tcp://{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(4222)
        )),
        _ => HostPattern::parse(&format!("{scheme}://{authority}")),
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
    fn sockets_are_granted_by_tcp_and_udp_patterns_only() {
        let a = AllowedHosts::from_config(
            Some(&[
                "tcp://127.0.0.1:4222".into(),
                "tcp://nats.example.com:*".into(),
                "udp://[::1]:8125".into(),
                "http://127.0.0.1:80".into(),
            ]),
            &toml::Table::new(),
        )
        .unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let tcp = Transport::Tcp;
        assert!(a.permits_socket(tcp, addr("127.0.0.1:4222"), &[]));
        assert!(a.permits_socket(tcp, addr("[::ffff:127.0.0.1]:4222"), &[]));
        assert!(!a.permits_socket(tcp, addr("127.0.0.1:4223"), &[]));
        assert!(
            !a.permits_socket(tcp, addr("127.0.0.1:80"), &[]),
            "an http grant"
        );
        assert!(!a.permits_socket(tcp, addr("10.1.2.3:9"), &[]));
        let names = ["NATS.example.com.".into()];
        assert!(a.permits_socket(tcp, addr("10.1.2.3:9"), &names));
        assert!(!a.permits_socket(Transport::Udp, addr("10.1.2.3:9"), &names));
        assert!(a.permits_socket(Transport::Udp, addr("[::1]:8125"), &[]));
        assert!(a.permits_lookup("nats.example.com"));
        assert!(a.permits_lookup("10.9.9.9"), "a literal needs no lookup");
        assert!(!a.permits_lookup("example.com"));
        assert!(!a.permits_lookup("evil.nats.example.com"));
        assert!(a.grants(Transport::Udp) && a.grants(tcp));
        assert!(!AllowedHosts::default().grants(tcp));
        let e = HostPattern::parse("tcp://127.0.0.1").unwrap_err();
        assert!(e.contains("needs a port"), "{e}");
        assert!(HostPattern::parse("unix://x:1").is_err());
    }

    #[test]
    fn nats_and_tcp_endpoints_grant_a_connection() {
        let cfg: toml::Table = toml::from_str(
            "endpoints = [\"nats://10.0.0.1\", \"tcp://10.0.0.2:4333\"]\nother = \"nats://10.0.0.3:1\"",
        )
        .unwrap();
        let a = AllowedHosts::from_config(None, &cfg).unwrap();
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(a.permits_socket(Transport::Tcp, addr("10.0.0.1:4222"), &[]));
        assert!(a.permits_socket(Transport::Tcp, addr("10.0.0.2:4333"), &[]));
        assert!(!a.permits_socket(Transport::Tcp, addr("10.0.0.3:1"), &[]));
        let bad: toml::Table = toml::from_str("endpoints = [\"nats://\"]").unwrap();
        let e = AllowedHosts::from_config(None, &bad).unwrap_err();
        assert!(e.starts_with("config.endpoints[0]: "), "{e}");
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
