//! OpenTelemetry → Prometheus names, following the OpenTelemetry specification's Prometheus
//! compatibility rules as the Collector implements them (with metric suffixes on).

/// OTel (UCUM) units and the word Prometheus names use for them.
const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

/// The denominator of a `X/Y` unit.
const PER_UNITS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn lookup(table: &[(&str, &'static str)], unit: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == unit).map(|(_, v)| *v)
}

/// What kind of series a metric becomes; it decides the suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gauge: with unit `1`, `_ratio`.
    Gauge,
    /// A non-monotonic sum: a gauge in Prometheus, but no `_ratio`.
    UpDown,
    /// A monotonic cumulative sum: `_total`.
    Counter,
    /// A histogram or summary (the `_bucket`/`_sum`/`_count` suffixes are added later).
    Distribution,
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// The Prometheus metric name for an OTel metric `name` with `unit`, optionally prefixed by
/// `namespace`.
pub fn metric_name(name: &str, unit: &str, kind: Kind, namespace: &str) -> String {
    let mut words: Vec<String> = tokens(name).map(str::to_string).collect();
    // `{packets}`-style annotations carry no unit.
    let unit: String = {
        let mut out = String::new();
        let mut depth = 0;
        for c in unit.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out.trim().to_string()
    };
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), Some(p.trim())),
        None => (unit.as_str(), None),
    };
    let main = lookup(UNITS, main).map_or_else(|| main.to_string(), str::to_string);
    for t in tokens(&main) {
        if !words.iter().any(|w| w == t) {
            words.push(t.to_string());
        }
    }
    if let Some(per) = per.filter(|p| !p.is_empty()) {
        let per = lookup(PER_UNITS, per).map_or_else(|| per.to_string(), str::to_string);
        let per_tokens: Vec<&str> = tokens(&per).collect();
        if !per_tokens.is_empty() && !per_tokens.iter().all(|t| words.iter().any(|w| w == t)) {
            words.push("per".into());
            words.extend(per_tokens.into_iter().map(str::to_string));
        }
    }
    match kind {
        Kind::Counter => {
            words.retain(|w| w != "total");
            words.push("total".into());
        }
        Kind::Gauge if unit == "1" && !words.iter().any(|w| w == "ratio") => {
            words.push("ratio".into());
        }
        _ => {}
    }
    let mut out = String::new();
    if !namespace.is_empty() {
        out.push_str(&label_name(namespace));
        out.push('_');
    }
    out.push_str(&words.join("_"));
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A valid Prometheus label name for an attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

/// A float as Prometheus writes `le` and `quantile` values.
pub fn float_label(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_suffixes() {
        assert_eq!(
            metric_name("e2e.requests", "1", Kind::Counter, ""),
            "e2e_requests_total"
        );
        assert_eq!(
            metric_name("http.server.duration", "ms", Kind::Distribution, ""),
            "http_server_duration_milliseconds"
        );
        assert_eq!(
            metric_name("system.memory.usage", "By", Kind::Gauge, ""),
            "system_memory_usage_bytes"
        );
        assert_eq!(
            metric_name("cpu.utilization", "1", Kind::Gauge, ""),
            "cpu_utilization_ratio"
        );
        assert_eq!(metric_name("active", "1", Kind::UpDown, ""), "active");
        assert_eq!(
            metric_name("requests_total", "{requests}", Kind::Counter, ""),
            "requests_total"
        );
        assert_eq!(
            metric_name("net.io", "By/s", Kind::Gauge, ""),
            "net_io_bytes_per_second"
        );
        assert_eq!(
            metric_name("latency_seconds", "s", Kind::Distribution, ""),
            "latency_seconds"
        );
        assert_eq!(
            metric_name("queue", "", Kind::Gauge, "ferry"),
            "ferry_queue"
        );
        assert_eq!(
            metric_name("2xx.count", "", Kind::Counter, ""),
            "_2xx_count_total"
        );
        assert_eq!(metric_name("x", "widgets", Kind::Gauge, ""), "x_widgets");
    }

    #[test]
    fn labels() {
        assert_eq!(label_name("http.method"), "http_method");
        assert_eq!(label_name("0key"), "key_0key");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
        assert_eq!(float_label(0.5), "0.5");
        assert_eq!(float_label(10.0), "10");
        assert_eq!(float_label(f64::INFINITY), "+Inf");
    }
}
