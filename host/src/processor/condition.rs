//! Conditions on telemetry items, shared by `filter` (what to drop) and `attributes`
//! (`include` / `exclude`): parsed and checked against the kind of item they will see, then
//! evaluated against a borrowed view of an item and its resource and scope.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::items::{self, Any, METRIC_NAME, RESOURCE_ATTRS, SCOPE_ATTRS, log, span};
use super::msg::Msg;

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A span.
    Span,
    /// An event of a span.
    SpanEvent,
    /// A log record.
    LogRecord,
    /// A whole metric.
    Metric,
    /// A data point of a metric.
    DataPoint,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Span => "spans",
            Target::SpanEvent => "span events",
            Target::LogRecord => "log records",
            Target::Metric => "metrics",
            Target::DataPoint => "data points",
        }
    }
}

/// One item, borrowed, with where it sits.
pub struct ItemView<'a> {
    /// Its resource.
    pub resource: &'a Msg,
    /// Its instrumentation scope.
    pub scope: &'a Msg,
    /// The item itself.
    pub item: Item<'a>,
}

/// The item a condition is evaluated on.
pub enum Item<'a> {
    /// A span.
    Span(&'a Msg),
    /// An event of a span.
    SpanEvent(&'a Msg),
    /// A log record.
    LogRecord(&'a Msg),
    /// A metric.
    Metric(&'a Msg),
    /// A data point: its metric's name, the point and the number of its attributes field.
    DataPoint(&'a str, &'a Msg, u32),
}

/// `{ any = [...] }` or `{ all = [...] }`: conditions and how they combine.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// True when any of these holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<ConditionConfig>,
    /// True when all of these hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<ConditionConfig>,
}

/// One condition: exactly one subject (`service`, `name`, `span_kind`, `status`,
/// `duration_above`, `duration_below`, `severity_below`, `severity_at_least`, `attribute`,
/// `resource_attribute`, `scope_attribute`), plus for attributes one test (`equals`, `regex`,
/// `exists`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// The resource's `service.name`, exactly.
    pub service: Option<String>,
    /// The resource's `service.name`, by regex.
    pub service_regex: Option<String>,
    /// The span, span event or metric name, exactly.
    pub name: Option<String>,
    /// The span, span event or metric name, by regex.
    pub name_regex: Option<String>,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub span_kind: Option<String>,
    /// `unset`, `ok` or `error`.
    pub status: Option<String>,
    /// Span duration strictly above this (`"500ms"`).
    pub duration_above: Option<String>,
    /// Span duration strictly below this.
    pub duration_below: Option<String>,
    /// Log severity below this (`trace`, `debug`, `info`, `warn`, `error`, `fatal`).
    pub severity_below: Option<String>,
    /// Log severity at least this.
    pub severity_at_least: Option<String>,
    /// An attribute of the item.
    pub attribute: Option<String>,
    /// An attribute of the item's resource.
    pub resource_attribute: Option<String>,
    /// An attribute of the item's instrumentation scope.
    pub scope_attribute: Option<String>,
    /// The attribute equals this value (string, integer, float or boolean).
    pub equals: Option<toml::Value>,
    /// The attribute's value (as text) matches this regex.
    pub regex: Option<String>,
    /// The attribute is present (`true`) or absent (`false`).
    pub exists: Option<bool>,
}

/// A checked [`MatchConfig`].
#[derive(Debug, Clone)]
pub struct Match {
    all: bool,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
enum Text {
    Exact(String),
    Regex(Regex),
}

impl Text {
    fn matches(&self, s: &str) -> bool {
        self.matches_raw(s.as_bytes())
    }

    /// As `matches`, on a string field's bytes: an exact match needs no UTF-8 check.
    fn matches_raw(&self, s: &[u8]) -> bool {
        match self {
            Text::Exact(t) => t.as_bytes() == s,
            Text::Regex(r) => std::str::from_utf8(s).is_ok_and(|s| r.is_match(s)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Item,
    Resource,
    Scope,
}

#[derive(Debug, Clone)]
enum AttrTest {
    Equals(toml::Value),
    Regex(Regex),
    Exists(bool),
}

#[derive(Debug, Clone)]
enum Condition {
    Service(Text),
    Name(Text),
    SpanKind(i32),
    Status(i32),
    DurationAbove(u64),
    DurationBelow(u64),
    SeverityBelow(i32),
    SeverityAtLeast(i32),
    Attribute(Level, String, AttrTest),
}

/// A regex, or the error naming `path`.
pub fn regex(path: &str, pattern: &str, errors: &mut Vec<String>) -> Option<Regex> {
    Regex::new(pattern)
        .map_err(|e| errors.push(format!("{path}: not a valid regex: {e}")))
        .ok()
}

fn text(
    path: &str,
    exact: &Option<String>,
    re: &Option<String>,
    errors: &mut Vec<String>,
) -> Option<Text> {
    match (exact, re) {
        (Some(e), None) => Some(Text::Exact(e.clone())),
        (None, Some(r)) => regex(path, r, errors).map(Text::Regex),
        _ => None,
    }
}

const SEVERITIES: [(&str, i32); 6] = [
    ("trace", 1),
    ("debug", 5),
    ("info", 9),
    ("warn", 13),
    ("error", 17),
    ("fatal", 21),
];

fn named(
    path: &str,
    what: &str,
    value: &str,
    table: &[(&str, i32)],
    errors: &mut Vec<String>,
) -> i32 {
    table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| {
            let names: Vec<_> = table.iter().map(|(n, _)| *n).collect();
            errors.push(format!(
                "{path}: unknown {what} {value:?} (expected one of {})",
                names.join(", ")
            ));
            0
        })
}

impl ConditionConfig {
    /// The subjects set, by key.
    fn subjects(&self) -> Vec<&'static str> {
        let c = self;
        [
            ("service", c.service.is_some() || c.service_regex.is_some()),
            ("name", c.name.is_some() || c.name_regex.is_some()),
            ("span_kind", c.span_kind.is_some()),
            ("status", c.status.is_some()),
            ("duration_above", c.duration_above.is_some()),
            ("duration_below", c.duration_below.is_some()),
            ("severity_below", c.severity_below.is_some()),
            ("severity_at_least", c.severity_at_least.is_some()),
            ("attribute", c.attribute.is_some()),
            ("resource_attribute", c.resource_attribute.is_some()),
            ("scope_attribute", c.scope_attribute.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect()
    }

    fn compile(&self, path: &str, target: Target, errors: &mut Vec<String>) -> Option<Condition> {
        let subjects = self.subjects();
        let [subject] = subjects[..] else {
            errors.push(format!(
                "{path}: set exactly one of service, service_regex, name, name_regex, span_kind, \
                 status, duration_above, duration_below, severity_below, severity_at_least, \
                 attribute, resource_attribute, scope_attribute (found {})",
                if subjects.is_empty() {
                    "none".to_string()
                } else {
                    subjects.join(", ")
                }
            ));
            return None;
        };
        let applies = match subject {
            "name" => target != Target::LogRecord,
            "span_kind" | "status" | "duration_above" | "duration_below" => target == Target::Span,
            "severity_below" | "severity_at_least" => target == Target::LogRecord,
            "attribute" => target != Target::Metric,
            _ => true,
        };
        if !applies {
            errors.push(format!("{path}: {} have no {subject}", target.as_str()));
            return None;
        }
        let is_attr = subject.ends_with("attribute");
        let tests = [
            self.equals.is_some(),
            self.regex.is_some(),
            self.exists.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        if is_attr && tests != 1 {
            errors.push(format!(
                "{path}: an attribute condition needs exactly one of equals, regex, exists"
            ));
            return None;
        }
        if !is_attr && tests != 0 {
            errors.push(format!(
                "{path}: equals, regex and exists go with attribute, resource_attribute or \
                 scope_attribute"
            ));
            return None;
        }
        if self.service.is_some() && self.service_regex.is_some()
            || self.name.is_some() && self.name_regex.is_some()
        {
            errors.push(format!(
                "{path}: set the exact value or the regex, not both"
            ));
            return None;
        }
        let duration = |d: &str, key: &str, errors: &mut Vec<String>| {
            crate::units::parse_duration(d)
                .map(|d| d.as_nanos() as u64)
                .map_err(|e| errors.push(format!("{path}.{key}: {e}")))
                .ok()
        };
        let c = self;
        Some(match subject {
            "service" => Condition::Service(text(
                &format!("{path}.service_regex"),
                &c.service,
                &c.service_regex,
                errors,
            )?),
            "name" => Condition::Name(text(
                &format!("{path}.name_regex"),
                &c.name,
                &c.name_regex,
                errors,
            )?),
            "span_kind" => Condition::SpanKind(named(
                &format!("{path}.span_kind"),
                "span kind",
                c.span_kind.as_deref()?,
                &[
                    ("unspecified", 0),
                    ("internal", 1),
                    ("server", 2),
                    ("client", 3),
                    ("producer", 4),
                    ("consumer", 5),
                ],
                errors,
            )),
            "status" => Condition::Status(named(
                &format!("{path}.status"),
                "status",
                c.status.as_deref()?,
                &[("unset", 0), ("ok", 1), ("error", 2)],
                errors,
            )),
            "duration_above" => Condition::DurationAbove(duration(
                c.duration_above.as_deref()?,
                "duration_above",
                errors,
            )?),
            "duration_below" => Condition::DurationBelow(duration(
                c.duration_below.as_deref()?,
                "duration_below",
                errors,
            )?),
            "severity_below" => Condition::SeverityBelow(named(
                &format!("{path}.severity_below"),
                "severity",
                c.severity_below.as_deref()?,
                &SEVERITIES,
                errors,
            )),
            "severity_at_least" => Condition::SeverityAtLeast(named(
                &format!("{path}.severity_at_least"),
                "severity",
                c.severity_at_least.as_deref()?,
                &SEVERITIES,
                errors,
            )),
            _ => {
                let (level, key) = match (&c.attribute, &c.resource_attribute, &c.scope_attribute) {
                    (Some(k), _, _) => (Level::Item, k),
                    (_, Some(k), _) => (Level::Resource, k),
                    (_, _, Some(k)) => (Level::Scope, k),
                    _ => return None,
                };
                let test = match (&c.equals, &c.regex, c.exists) {
                    (Some(v), _, _) => match v {
                        toml::Value::String(_)
                        | toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_) => AttrTest::Equals(v.clone()),
                        _ => {
                            errors.push(format!(
                                "{path}.equals: must be a string, integer, float or boolean"
                            ));
                            return None;
                        }
                    },
                    (_, Some(r), _) => AttrTest::Regex(regex(&format!("{path}.regex"), r, errors)?),
                    (_, _, Some(e)) => AttrTest::Exists(e),
                    _ => return None,
                };
                Condition::Attribute(level, key.clone(), test)
            }
        })
    }
}

impl MatchConfig {
    /// Checks the conditions for items of `target`, naming each problem under `path`.
    pub fn compile(&self, path: &str, target: Target, errors: &mut Vec<String>) -> Option<Match> {
        let (all, list, key) = match (self.any.is_empty(), self.all.is_empty()) {
            (false, true) => (false, &self.any, "any"),
            (true, false) => (true, &self.all, "all"),
            _ => {
                errors.push(format!(
                    "{path}: set exactly one of `any` and `all`, with at least one condition"
                ));
                return None;
            }
        };
        let before = errors.len();
        let conditions: Vec<_> = list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.compile(&format!("{path}.{key}[{i}]"), target, errors))
            .collect();
        (errors.len() == before).then_some(Match { all, conditions })
    }
}

impl Match {
    /// Whether `view` meets the conditions; for `any`, the index of the first that holds.
    pub fn first(&self, view: &ItemView<'_>) -> Option<usize> {
        if self.all {
            self.conditions.iter().all(|c| c.holds(view)).then_some(0)
        } else {
            self.conditions.iter().position(|c| c.holds(view))
        }
    }

    /// Whether `view` meets the conditions.
    pub fn holds(&self, view: &ItemView<'_>) -> bool {
        self.first(view).is_some()
    }

    /// How a match is named in metrics (`any[2]`, `all`).
    pub fn label(&self, index: usize) -> String {
        if self.all {
            "all".into()
        } else {
            format!("any[{index}]")
        }
    }
}

fn equals(want: &toml::Value, have: Any<'_>) -> bool {
    match (want, have) {
        (toml::Value::String(w), Any::Str(h)) => w == h,
        (toml::Value::Integer(w), Any::Int(h)) => *w == h,
        (toml::Value::Integer(w), Any::Double(h)) => (*w as f64) == h,
        (toml::Value::Float(w), Any::Double(h)) => *w == h,
        (toml::Value::Float(w), Any::Int(h)) => *w == (h as f64),
        (toml::Value::Boolean(w), Any::Bool(h)) => *w == h,
        _ => false,
    }
}

impl Condition {
    fn holds(&self, v: &ItemView<'_>) -> bool {
        match (self, &v.item) {
            (Condition::Service(t), _) => t.matches(items::service(v.resource)),
            (Condition::Name(t), Item::Span(s)) => t.matches_raw(s.view().raw(span::NAME)),
            (Condition::Name(t), Item::SpanEvent(e)) => {
                t.matches_raw(e.view().raw(span::EVENT_NAME))
            }
            (Condition::Name(t), Item::Metric(m)) => t.matches_raw(m.view().raw(METRIC_NAME)),
            (Condition::Name(t), Item::DataPoint(name, _, _)) => t.matches(name),
            (Condition::SpanKind(k), Item::Span(s)) => s.view().uint(span::KIND) as i32 == *k,
            (Condition::Status(c), Item::Span(s)) => {
                let status = s.view().get(span::STATUS);
                status.map_or(0, |st| st.uint(span::STATUS_CODE)) as i32 == *c
            }
            (Condition::DurationAbove(n), Item::Span(s)) => duration(s) > *n,
            (Condition::DurationBelow(n), Item::Span(s)) => duration(s) < *n,
            (Condition::SeverityBelow(n), Item::LogRecord(l)) => {
                (l.view().uint(log::SEVERITY) as i32) < *n
            }
            (Condition::SeverityAtLeast(n), Item::LogRecord(l)) => {
                l.view().uint(log::SEVERITY) as i32 >= *n
            }
            (Condition::Attribute(level, key, test), item) => {
                let (msg, num) = match (level, item) {
                    (Level::Resource, _) => (v.resource, RESOURCE_ATTRS),
                    (Level::Scope, _) => (v.scope, SCOPE_ATTRS),
                    (Level::Item, Item::Span(s)) => (*s, span::ATTRS),
                    (Level::Item, Item::SpanEvent(e)) => (*e, span::EVENT_ATTRS),
                    (Level::Item, Item::LogRecord(l)) => (*l, log::ATTRS),
                    (Level::Item, Item::DataPoint(_, p, n)) => (*p, *n),
                    (Level::Item, Item::Metric(_)) => {
                        return matches!(test, AttrTest::Exists(false));
                    }
                };
                let value = items::attr(msg.view(), num, key).and_then(Any::of);
                match test {
                    AttrTest::Exists(e) => value.is_some() == *e,
                    AttrTest::Equals(w) => value.is_some_and(|h| equals(w, h)),
                    AttrTest::Regex(r) => value.is_some_and(|h| r.is_match(&h.text())),
                }
            }
            _ => false,
        }
    }
}

fn duration(s: &Msg) -> u64 {
    let v = s.view();
    v.uint(span::END).saturating_sub(v.uint(span::START))
}
