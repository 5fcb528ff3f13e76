//! `attributes` (on spans, span events, log records and data points) and `resource` (on
//! resource attributes): insert, update, upsert, delete, hash and rename, by exact key or
//! regex, with optional include / exclude conditions.

use ferry_proto::common::{AnyValue, ArrayValue, KeyValue, any_value};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::condition::{Item, ItemView, Match, MatchConfig, Target, regex};
use super::{Decoded, Native, Setup, Tally, otlp};
use crate::signal::Signal;

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Add the attribute where it is absent.
    Insert,
    /// Change the attribute where it is present.
    Update,
    /// Set the attribute, present or not.
    Upsert,
    /// Remove the attribute(s).
    Delete,
    /// Replace the value(s) by the SHA-256 of their text, in lower-case hex.
    Hash,
    /// Move the attribute to the key `to` (replacing what `to` held).
    Rename,
}

/// One entry of `actions`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute's key.
    pub key: Option<String>,
    /// A regex over keys (delete and hash only).
    pub pattern: Option<String>,
    /// What to do.
    pub action: ActionKind,
    /// The value to set (insert, update, upsert).
    pub value: Option<toml::Value>,
    /// Take the value from this attribute of the same item instead (insert, update, upsert).
    pub from_attribute: Option<String>,
    /// The new key (rename).
    pub to: Option<String>,
}

#[derive(Debug, Clone)]
enum Keys {
    Exact(String),
    Regex(Regex),
}

impl Keys {
    fn matches(&self, k: &str) -> bool {
        match self {
            Keys::Exact(e) => e == k,
            Keys::Regex(r) => r.is_match(k),
        }
    }
}

#[derive(Debug, Clone)]
enum Source {
    Value(AnyValue),
    From(String),
}

#[derive(Debug, Clone)]
enum Action {
    Set {
        key: String,
        source: Source,
        insert: bool,
        update: bool,
    },
    Delete(Keys),
    Hash(Keys),
    Rename {
        from: String,
        to: String,
    },
}

/// A TOML value as an OTLP attribute value, if it has one.
pub fn any_value(v: &toml::Value) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match v {
        toml::Value::String(s) => V::StringValue(s.clone()),
        toml::Value::Integer(i) => V::IntValue(*i),
        toml::Value::Float(f) => V::DoubleValue(*f),
        toml::Value::Boolean(b) => V::BoolValue(*b),
        toml::Value::Array(a) => V::ArrayValue(ArrayValue {
            values: a.iter().map(any_value).collect::<Option<_>>()?,
        }),
        _ => return None,
    };
    Some(AnyValue { value: Some(value) })
}

impl ActionConfig {
    fn compile(&self, path: &str, errors: &mut Vec<String>) -> Option<Action> {
        use ActionKind as K;
        let a = self;
        let fail = |errors: &mut Vec<String>, msg: &str| {
            errors.push(format!("{path}: {msg}"));
            None
        };
        match a.action {
            K::Insert | K::Update | K::Upsert => {
                let Some(key) = &a.key else {
                    return fail(errors, "insert, update and upsert need `key`");
                };
                if a.pattern.is_some() || a.to.is_some() {
                    return fail(
                        errors,
                        "insert, update and upsert take `key` and `value` or `from_attribute` only",
                    );
                }
                let source = match (&a.value, &a.from_attribute) {
                    (Some(v), None) => match any_value(v) {
                        Some(v) => Source::Value(v),
                        None => {
                            return fail(
                                errors,
                                "`value` must be a string, number, boolean or array of them",
                            );
                        }
                    },
                    (None, Some(f)) => Source::From(f.clone()),
                    _ => return fail(errors, "set exactly one of `value` and `from_attribute`"),
                };
                Some(Action::Set {
                    key: key.clone(),
                    source,
                    insert: a.action != K::Update,
                    update: a.action != K::Insert,
                })
            }
            K::Delete | K::Hash => {
                if a.value.is_some() || a.from_attribute.is_some() || a.to.is_some() {
                    return fail(errors, "delete and hash take `key` or `pattern` only");
                }
                let keys = match (&a.key, &a.pattern) {
                    (Some(k), None) => Keys::Exact(k.clone()),
                    (None, Some(p)) => Keys::Regex(regex(&format!("{path}.pattern"), p, errors)?),
                    _ => return fail(errors, "set exactly one of `key` and `pattern`"),
                };
                Some(if a.action == K::Delete {
                    Action::Delete(keys)
                } else {
                    Action::Hash(keys)
                })
            }
            K::Rename => match (&a.key, &a.to, &a.pattern, &a.value, &a.from_attribute) {
                (Some(from), Some(to), None, None, None) => Some(Action::Rename {
                    from: from.clone(),
                    to: to.clone(),
                }),
                _ => fail(errors, "rename takes `key` and `to` only"),
            },
        }
    }
}

fn hash(v: &any_value::Value) -> any_value::Value {
    let digest = Sha256::digest(otlp::text(v).as_bytes());
    any_value::Value::StringValue(otlp::hex(&digest))
}

impl Action {
    /// Applies the action to one attribute list; says whether it changed.
    fn apply(&self, attrs: &mut Vec<KeyValue>) -> bool {
        match self {
            Action::Set {
                key,
                source,
                insert,
                update,
            } => {
                let value = match source {
                    Source::Value(v) => v.clone(),
                    Source::From(f) => match attrs
                        .iter()
                        .find(|kv| &kv.key == f)
                        .and_then(|kv| kv.value.clone())
                    {
                        Some(v) => v,
                        None => return false,
                    },
                };
                match attrs.iter_mut().find(|kv| &kv.key == key) {
                    Some(kv) if *update => {
                        let changed = kv.value.as_ref() != Some(&value);
                        kv.value = Some(value);
                        changed
                    }
                    None if *insert => {
                        attrs.push(otlp::kv(key.clone(), Some(value)));
                        true
                    }
                    _ => false,
                }
            }
            Action::Delete(keys) => {
                let before = attrs.len();
                attrs.retain(|kv| !keys.matches(&kv.key));
                attrs.len() != before
            }
            Action::Hash(keys) => {
                let mut changed = false;
                for kv in attrs.iter_mut().filter(|kv| keys.matches(&kv.key)) {
                    if let Some(v) = kv.value.as_mut().and_then(|v| v.value.as_mut()) {
                        *v = hash(v);
                        changed = true;
                    }
                }
                changed
            }
            Action::Rename { from, to } => {
                let Some(i) = attrs.iter().position(|kv| &kv.key == from) else {
                    return false;
                };
                let mut kv = attrs.remove(i);
                attrs.retain(|x| &x.key != to);
                kv.key = to.clone();
                attrs.push(kv);
                true
            }
        }
    }
}

fn apply_all(actions: &[Action], attrs: &mut Vec<KeyValue>) -> bool {
    actions
        .iter()
        .fold(false, |changed, a| a.apply(attrs) | changed)
}

fn compile_actions(path: &str, actions: &[ActionConfig], errors: &mut Vec<String>) -> Vec<Action> {
    if actions.is_empty() {
        errors.push(format!("{path}.actions: list at least one action"));
    }
    actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.compile(&format!("{path}.actions[{i}]"), errors))
        .collect()
}

/// Which attributes `attributes` edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    /// Span attributes.
    Spans,
    /// Span event attributes.
    SpanEvents,
    /// Log record attributes.
    LogRecords,
    /// Data point attributes.
    DataPoints,
}

impl ApplyTo {
    fn target(self) -> Target {
        match self {
            ApplyTo::Spans => Target::Span,
            ApplyTo::SpanEvents => Target::SpanEvent,
            ApplyTo::LogRecords => Target::LogRecord,
            ApplyTo::DataPoints => Target::DataPoint,
        }
    }
}

/// Every kind of item: the default of `apply_to`.
pub(super) fn every_target() -> Vec<ApplyTo> {
    vec![
        ApplyTo::Spans,
        ApplyTo::SpanEvents,
        ApplyTo::LogRecords,
        ApplyTo::DataPoints,
    ]
}

/// `kind = "attributes"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesConfig {
    actions: Vec<ActionConfig>,
    #[serde(default = "every_target")]
    apply_to: Vec<ApplyTo>,
    include: Option<MatchConfig>,
    exclude: Option<MatchConfig>,
}

/// Per target: the actions apply where `include` holds (or is unset) and `exclude` does not.
struct Scoped {
    include: Option<Match>,
    exclude: Option<Match>,
}

impl Scoped {
    fn applies(&self, view: &ItemView<'_>) -> bool {
        self.include.as_ref().is_none_or(|m| m.holds(view))
            && !self.exclude.as_ref().is_some_and(|m| m.holds(view))
    }
}

struct Attributes {
    actions: Vec<Action>,
    /// Indexed like [`ApplyTo`]; `None` where the processor does not apply.
    scopes: [Option<Scoped>; 4],
}

/// Builds an `attributes` processor.
pub fn build_attributes(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: AttributesConfig = s.parse()?;
    let mut errors = Vec::new();
    let actions = compile_actions(&s.path, &c.actions, &mut errors);
    if c.apply_to.is_empty() {
        errors.push(format!(
            "{}.apply_to: list at least one of spans, span_events, log_records, data_points",
            s.path
        ));
    }
    let mut scopes = [None, None, None, None];
    for a in &c.apply_to {
        let m = |key: &str, m: &Option<MatchConfig>, errors: &mut Vec<String>| {
            m.as_ref()
                .and_then(|m| m.compile(&format!("{}.{key}", s.path), a.target(), errors))
        };
        scopes[*a as usize] = Some(Scoped {
            include: m("include", &c.include, &mut errors),
            exclude: m("exclude", &c.exclude, &mut errors),
        });
    }
    if !errors.is_empty() {
        errors.dedup();
        if errors.iter().any(|e| e.contains(" have no ")) {
            errors.push(format!(
                "{}.apply_to: include and exclude must fit every kind of item listed here (default: spans, span_events, log_records, data_points)",
                s.path
            ));
        }
        return Err(errors);
    }
    Ok(Box::new(Attributes { actions, scopes }))
}

impl Native for Attributes {
    fn handles(&self, signal: Signal) -> bool {
        let on = |a: ApplyTo| self.scopes[a as usize].is_some();
        match signal {
            Signal::Traces => on(ApplyTo::Spans) || on(ApplyTo::SpanEvents),
            Signal::Logs => on(ApplyTo::LogRecords),
            Signal::Metrics => on(ApplyTo::DataPoints),
        }
    }

    fn process(&self, data: &mut Decoded) -> Tally {
        let mut modified = 0;
        let [spans, events, logs, points] = &self.scopes;
        match data {
            Decoded::Traces(r) => otlp::each_span(r, |resource, scope, span| {
                let mut changed = false;
                if let Some(sc) = spans
                    && sc.applies(&ItemView {
                        resource,
                        scope,
                        item: Item::Span(span),
                    })
                {
                    changed |= apply_all(&self.actions, &mut span.attributes);
                }
                if let Some(sc) = events {
                    for e in &mut span.events {
                        if sc.applies(&ItemView {
                            resource,
                            scope,
                            item: Item::SpanEvent(e),
                        }) {
                            changed |= apply_all(&self.actions, &mut e.attributes);
                        }
                    }
                }
                modified += u64::from(changed);
            }),
            Decoded::Logs(r) => otlp::each_log(r, |resource, scope, log| {
                if let Some(sc) = logs
                    && sc.applies(&ItemView {
                        resource,
                        scope,
                        item: Item::LogRecord(log),
                    })
                {
                    modified += u64::from(apply_all(&self.actions, &mut log.attributes));
                }
            }),
            Decoded::Metrics(r) => otlp::each_metric(r, |resource, scope, m| {
                if let Some(sc) = points {
                    otlp::each_point_attrs(m, |metric, attrs| {
                        if sc.applies(&ItemView {
                            resource,
                            scope,
                            item: Item::DataPoint(metric, attrs),
                        }) {
                            modified += u64::from(apply_all(&self.actions, attrs));
                        }
                    });
                }
            }),
        }
        Tally {
            dropped: 0,
            modified,
        }
    }
}

/// `kind = "resource"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    actions: Vec<ActionConfig>,
}

struct Resource {
    actions: Vec<Action>,
}

/// Builds a `resource` processor.
pub fn build_resource(s: &Setup<'_>) -> Result<Box<dyn Native>, Vec<String>> {
    let c: ResourceConfig = s.parse()?;
    let mut errors = Vec::new();
    let actions = compile_actions(&s.path, &c.actions, &mut errors);
    if errors.is_empty() {
        Ok(Box::new(Resource { actions }))
    } else {
        Err(errors)
    }
}

impl Native for Resource {
    fn handles(&self, _: Signal) -> bool {
        true
    }

    fn process(&self, data: &mut Decoded) -> Tally {
        // A changed resource changes every item under it.
        let mut modified = 0;
        let mut each = |attrs: &mut Vec<KeyValue>, items: u64| {
            if apply_all(&self.actions, attrs) {
                modified += items;
            }
        };
        let mut on = |r: &mut Option<ferry_proto::resource::Resource>, items: u64| {
            each(
                &mut r.get_or_insert_with(Default::default).attributes,
                items,
            )
        };
        match data {
            Decoded::Traces(req) => {
                for rs in &mut req.resource_spans {
                    let n = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
                    on(&mut rs.resource, n);
                }
            }
            Decoded::Logs(req) => {
                for rl in &mut req.resource_logs {
                    let n = rl
                        .scope_logs
                        .iter()
                        .map(|s| s.log_records.len() as u64)
                        .sum();
                    on(&mut rl.resource, n);
                }
            }
            Decoded::Metrics(req) => {
                for rm in &mut req.resource_metrics {
                    let n = rm
                        .scope_metrics
                        .iter()
                        .flat_map(|s| &s.metrics)
                        .map(|m| otlp::point_count(m) as u64)
                        .sum();
                    on(&mut rm.resource, n);
                }
            }
        }
        Tally {
            dropped: 0,
            modified,
        }
    }
}
