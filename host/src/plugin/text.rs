//! Strings from a plugin on their way into the host's log: bounded and escaped, so a plugin
//! can neither flood the log nor forge a line, and `host.log` rate-limited per exporter.
//!
//! Everything a plugin hands the host as text (log messages, error messages, stderr, manifest
//! fields, the URIs it asks for) passes through [`escape`] or [`escape_tail`] before it is
//! logged. Newlines, control and invisible formatting characters and backslashes are escaped,
//! so a plugin's text always stays inside the one line the host writes, which ends with the
//! host's own structured fields (`exporter="…"`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::telemetry::Counter;

/// Default longest plugin text the log carries, after escaping.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 10;

/// Default `host.log` messages per second per exporter.
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 100;

/// How plugin text reaches the log: the longest piece and how many `host.log` messages a
/// second each exporter may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogPolicy {
    /// Longest text, in bytes after escaping; the rest is summarised.
    pub max_message_bytes: usize,
    /// `host.log` messages per second per exporter; the excess is dropped and counted.
    pub messages_per_second: u32,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            messages_per_second: DEFAULT_MESSAGES_PER_SECOND,
        }
    }
}

/// Appends `c` to `out` as it may appear in a log line.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if c.is_control() || is_invisible(c) => {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
        c => out.push(c),
    }
}

/// Characters that change how a line displays without showing themselves (zero-width,
/// line and paragraph separators, bidirectional overrides, the byte-order mark).
fn is_invisible(c: char) -> bool {
    matches!(c as u32, 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2069 | 0xFEFF)
}

fn escaped_len(c: char) -> usize {
    let mut s = String::new();
    push_escaped(&mut s, c);
    s.len()
}

fn truncated(n: usize) -> String {
    format!("… {n} bytes truncated")
}

/// `text` fit for one log line: escaped, and cut after `max` bytes of output with a note of
/// how many bytes of the original were left out.
pub fn escape(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (i, c) in text.char_indices() {
        if out.len() + escaped_len(c) > max {
            out.push_str(&truncated(text.len() - i));
            return out;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// Like [`escape`], but keeps the end of `text` (where a panic message is, in stderr).
pub fn escape_tail(text: &str, max: usize) -> String {
    let mut pieces: Vec<String> = Vec::new();
    let mut used = 0;
    let mut left_out = 0;
    for (i, c) in text.char_indices().rev() {
        let mut piece = String::new();
        push_escaped(&mut piece, c);
        if used + piece.len() > max {
            left_out = i + c.len_utf8();
            break;
        }
        used += piece.len();
        pieces.push(piece);
    }
    let mut out = String::with_capacity(used + 32);
    if left_out > 0 {
        out.push_str(&format!("({left_out} earlier bytes truncated) …"));
    }
    for p in pieces.iter().rev() {
        out.push_str(p);
    }
    out
}

/// Admits at most `messages_per_second` `host.log` messages a second for one exporter (shared
/// by its instances); the rest are counted and summarised in one line per second.
pub struct LogGate {
    exporter: Arc<str>,
    policy: LogPolicy,
    dropped: Counter,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    admitted: u32,
    dropped: u64,
}

const WINDOW: Duration = Duration::from_secs(1);

impl LogGate {
    /// A gate for `exporter`'s plugin, counting refused messages in `dropped`.
    pub fn new(exporter: Arc<str>, policy: LogPolicy, dropped: Counter) -> Self {
        LogGate {
            exporter,
            policy,
            dropped,
            window: Mutex::new(Window {
                started: Instant::now(),
                admitted: 0,
                dropped: 0,
            }),
        }
    }

    /// The policy this gate applies.
    pub fn policy(&self) -> LogPolicy {
        self.policy
    }

    /// Whether one more message may be logged now. The first message dropped in a window
    /// schedules the window's summary line for its end, so a flood followed by silence is
    /// reported too.
    pub fn admit(self: &Arc<Self>) -> bool {
        let mut w = self.window.lock().expect("log gate lock");
        self.roll(&mut w);
        if w.admitted < self.policy.messages_per_second {
            w.admitted += 1;
            return true;
        }
        if w.dropped == 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let gate = self.clone();
            let end = tokio::time::Instant::from_std(w.started + WINDOW);
            runtime.spawn(async move {
                tokio::time::sleep_until(end).await;
                gate.flush();
            });
        }
        w.dropped += 1;
        self.dropped.inc();
        false
    }

    /// Writes the summary of a past window that dropped messages (also done by the next
    /// [`LogGate::admit`]).
    pub fn flush(&self) {
        let mut w = self.window.lock().expect("log gate lock");
        self.roll(&mut w);
    }

    fn roll(&self, w: &mut Window) {
        let elapsed = w.started.elapsed();
        if elapsed < WINDOW {
            return;
        }
        if w.dropped > 0 {
            tracing::warn!(
                exporter = &*self.exporter,
                "plugin log rate limit: {} messages dropped in {:.1?} (limit {} per second)",
                w.dropped,
                elapsed,
                self.policy.messages_per_second
            );
        }
        *w = Window {
            started: Instant::now(),
            admitted: 0,
            dropped: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_controls_stay_on_one_line() {
        let forged = "ok\n2026-12-02T00:00:00Z ERROR exporter=\"good\" \u{1b}[31mred\u{202e}";
        let e = escape(forged, 1024);
        assert!(!e.contains('\n') && !e.contains('\u{1b}') && !e.contains('\u{202e}'));
        assert!(
            e.contains("\\n2026-12-02T00:00:00Z ERROR exporter=\"good\""),
            "{e}"
        );
        assert_eq!(escape("a\\b", 64), "a\\\\b");
        assert_eq!(escape("plain text, ünïcode", 1024), "plain text, ünïcode");
    }

    #[test]
    fn long_text_is_cut_on_a_character_with_the_rest_counted() {
        let text = "é".repeat(10_000);
        let e = escape(&text, 101);
        assert!(e.starts_with(&"é".repeat(50)), "{e}");
        assert!(e.ends_with("… 19900 bytes truncated"), "{e}");
        let t = escape_tail(&format!("{}panicked at the end", "x".repeat(5000)), 20);
        assert_eq!(t, "(4999 earlier bytes truncated) …xpanicked at the end");
        assert_eq!(escape_tail("short", 20), "short");
    }

    #[test]
    fn the_gate_admits_its_rate_and_counts_the_rest() {
        let dropped = Counter::default();
        let policy = LogPolicy {
            messages_per_second: 3,
            ..LogPolicy::default()
        };
        let gate = Arc::new(LogGate::new("x".into(), policy, dropped.clone()));
        let admitted = (0..10).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(dropped.get(), 7);
        // A new window admits again.
        gate.window.lock().unwrap().started -= WINDOW;
        assert!(gate.admit());
    }
}
