//! `attributes` (on spans, span events, log records and data points) and `resource` (on
//! resource attributes): insert, update, upsert, delete, hash and rename, by exact key or
//! regex, with optional include / exclude conditions.

use bytes::Bytes;
use ferry_proto::common::{AnyValue, ArrayValue, any_value};
use prost::Message;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::condition::{Item, ItemView, Match, MatchConfig, Target, regex};
use super::items::{self, Any, Key, RESOURCE_ATTRS, edit_attrs, kv, log, span};
use super::msg::{Edit, Msg};
use super::{At, Native, Notes, Setup, Tally};
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
    fn matches(&self, k: Key<'_>) -> bool {
        match self {
            Keys::Exact(e) => k.is(e),
            Keys::Regex(r) => r.is_match(k.text()),
        }
    }
}

#[derive(Debug, Clone)]
enum Source {
    /// `AnyValue` bytes.
    Value(Bytes),
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
                        Some(v) => Source::Value(v.encode_to_vec().into()),
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

impl Action {
    /// Applies the action to attributes field `num` of `item`; says whether it changed.
    fn apply(&self, item: &mut Msg, num: u32) -> bool {
        match self {
            Action::Set {
                key,
                source,
                insert,
                update,
            } => {
                let value = match source {
                    Source::Value(v) => v.clone(),
                    Source::From(f) => match items::attr(item.view(), num, f) {
                        Some(v) => Bytes::copy_from_slice(v),
                        None => return false,
                    },
                };
                let mut found = false;
                let changed = edit_attrs(item, num, |k, v| {
                    if found || !k.is(key) {
                        return Edit::Keep;
                    }
                    found = true;
                    if *update && v != &value[..] {
                        Edit::Replace(kv(key, &value))
                    } else {
                        Edit::Keep
                    }
                });
                if !found && *insert {
                    item.push(num, kv(key, &value));
                    return true;
                }
                changed
            }
            Action::Delete(keys) => edit_attrs(item, num, |k, _| {
                if keys.matches(k) {
                    Edit::Remove
                } else {
                    Edit::Keep
                }
            }),
            Action::Hash(keys) => edit_attrs(item, num, |k, v| match Any::of(v) {
                Some(any) if keys.matches(k) => Edit::Replace(kv(k.0, &items::hashed(any))),
                _ => Edit::Keep,
            }),
            Action::Rename { from, to } => {
                let Some(value) = items::attr(item.view(), num, from).map(Bytes::copy_from_slice)
                else {
                    return false;
                };
                let mut first = true;
                edit_attrs(item, num, |k, _| {
                    if k.is(from) && std::mem::take(&mut first) || k.is(to) {
                        Edit::Remove
                    } else {
                        Edit::Keep
                    }
                });
                item.push(num, kv(to, &value));
                true
            }
        }
    }
}

fn apply_all(actions: &[Action], item: &mut Msg, num: u32) -> bool {
    actions
        .iter()
        .fold(false, |changed, a| a.apply(item, num) | changed)
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

    fn item(&self, signal: Signal, at: &At<'_>, item: &mut Msg, _: &mut Notes) -> Tally {
        let [spans, events, logs, points] = &self.scopes;
        let modified = match signal {
            Signal::Traces => {
                let mut changed = false;
                if let Some(sc) = spans
                    && sc.applies(&at.view(Item::Span(item)))
                {
                    changed |= apply_all(&self.actions, item, span::ATTRS);
                }
                if let Some(sc) = events
                    && item.view().count(span::EVENTS) > 0
                {
                    item.with_children(0, span::EVENTS, |_, e| {
                        if sc.applies(&at.view(Item::SpanEvent(e))) {
                            changed |= apply_all(&self.actions, e, span::EVENT_ATTRS);
                        }
                    });
                }
                u64::from(changed)
            }
            Signal::Logs => match logs {
                Some(sc) if sc.applies(&at.view(Item::LogRecord(item))) => {
                    u64::from(apply_all(&self.actions, item, log::ATTRS))
                }
                _ => 0,
            },
            Signal::Metrics => {
                let mut modified = 0;
                if let Some(sc) = points {
                    items::points(item, |name, p, num| {
                        if sc.applies(&at.view(Item::DataPoint(name, p, num))) {
                            modified += u64::from(apply_all(&self.actions, p, num));
                        }
                        true
                    });
                }
                modified
            }
        };
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

    fn on_resources(&self) -> bool {
        true
    }

    fn resource(&self, _: Signal, resource: &mut Msg) -> bool {
        apply_all(&self.actions, resource, RESOURCE_ATTRS)
    }
}
