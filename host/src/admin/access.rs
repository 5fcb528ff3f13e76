//! Who may read the admin endpoint. On loopback it is open. Anywhere else a token is required
//! (`[admin] token_file`), because `/status` and taps show what flows, telemetry contents
//! included; the paths in `[admin] open` (by default `/metrics`, `/healthz` and `/readyz`) are
//! served without it, for scrapers and probes.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Paths the admin endpoint serves.
pub const PATHS: &[&str] = &[
    "/metrics",
    "/healthz",
    "/readyz",
    "/status",
    "/status.json",
    "/tap",
    "/tap/points",
];

/// A token longer than this is refused when read: it is a secret, not a document.
const MAX_TOKEN: usize = 4096;

/// What the admin endpoint lets through without a token, and the token.
#[derive(Clone, Debug)]
pub struct Access {
    token: Option<String>,
    open: Vec<String>,
}

impl Access {
    /// Everything open (no token).
    pub fn open() -> Access {
        Access {
            token: None,
            open: Vec::new(),
        }
    }

    /// `token` required on every path but `open`.
    pub fn with_token(token: String, open: Vec<String>) -> Access {
        Access {
            token: Some(token),
            open,
        }
    }

    /// Whether a request for `path` with these `headers` and `query` may be served.
    fn admits(&self, path: &str, headers: &axum::http::HeaderMap, query: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if self.open.iter().any(|p| p == path) {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // A browser opening the page cannot send a header: it may pass `?token=` once.
        let in_query = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(percent_decode)
        });
        bearer.is_some_and(|b| same(b.as_bytes(), token.as_bytes()))
            || in_query.is_some_and(|q| same(q.as_bytes(), token.as_bytes()))
    }
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `s` with `%XX` and `+` decoded (a URL query's value).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the token in `path`: one line, surrounding whitespace trimmed.
pub fn read_token(path: &Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_TOKEN as u64 {
        return Err(format!("{} is over {MAX_TOKEN} bytes", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{} holds more than one line or a space: a token is one word",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// The middleware: 401 (with `WWW-Authenticate: Bearer`) unless [`Access`] lets it through.
pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    if access.admits(req.uri().path(), req.headers(), req.uri().query()) {
        return next.run(req).await;
    }
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        "this admin endpoint needs its token: Authorization: Bearer <token> (see [admin] token_file)\n",
    )
        .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_token_is_needed_but_on_open_paths() {
        let a = Access::with_token("s3cr%t".into(), vec!["/metrics".into()]);
        let none = HeaderMap::new();
        assert!(a.admits("/metrics", &none, None));
        assert!(!a.admits("/status.json", &none, None));
        assert!(!a.admits("/status.json", &bearer("s3cr%"), None));
        assert!(a.admits("/status.json", &bearer("s3cr%t"), None));
        assert!(a.admits("/status", &none, Some("x=1&token=s3cr%25t")));
        assert!(!a.admits("/status", &none, Some("token=s3cr")));
        assert!(Access::open().admits("/status", &none, None));
    }

    #[test]
    fn a_token_file_holds_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc123\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "abc123");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token(&p).unwrap_err().ends_with("is empty"));
        std::fs::write(&p, "a b\n").unwrap();
        assert!(read_token(&p).unwrap_err().contains("one word"));
        assert!(
            read_token(&dir.path().join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
