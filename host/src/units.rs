//! Durations and sizes as people write them in config files (`200ms`, `64MiB`), and
//! deserialising a section with its key path in errors: shared by every component's config
//! type. Also config keys as file names.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A file name for the config key `name` (any string) with `extension`: one path component,
/// bytes other than ASCII letters, digits, `-` and `_` written `%XX`, so distinct keys get
/// distinct names.
pub fn file_name(name: &str, extension: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{out}.{extension}")
}

/// Parses a duration like `200ms`, `5s`, `1m`, `2h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (expected e.g. \"200ms\", \"5s\", \"1m\")"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size like `64MiB`, `512KiB`, `1GiB`, `100MB` or a bare number of bytes.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. \"64MiB\")"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A config value given as a bare number or as text with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

/// Deserialises a duration: seconds as a number, or text like `200ms`.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// Deserialises an optional duration (for fields with `#[serde(default)]`).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Deserialises a size: bytes as a number, or text like `64MiB`.
pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => usize::try_from(n).map_err(serde::de::Error::custom),
        NumOrStr::Str(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

/// Deserialises an optional size (for fields with `#[serde(default)]`).
pub fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    de_bytes(d).map(Some)
}

/// Deserialises `value` found at `key`, naming the full key path of any error.
pub fn at_path<T: DeserializeOwned>(key: &str, value: &toml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." || inner.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{inner}")
        };
        format!("{path}: {}", e.inner().message().trim())
    })
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn config_keys_become_one_path_component_each_its_own() {
        assert_eq!(file_name("tail-1_a", "d"), "tail-1_a.d");
        assert_eq!(file_name("../x y", "d"), "%2E%2E%2Fx%20y.d");
        assert_ne!(file_name("a.b", "d"), file_name("a%2Eb", "d"));
        assert_eq!(file_name("é", "d"), "%C3%A9.d");
    }
}
