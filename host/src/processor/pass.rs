//! A run of native processors in one walk over a request: each item goes through every
//! processor of the run in turn and is written out before the next item is read (item
//! after item, not processor after processor). A run starts with the processors that edit
//! resources, so each item meets its resource as the processor-after-processor order would
//! show it: [`plan`] splits a chain where that would not hold.
//!
//! Per item, the result is the same as running the processors one after another over the
//! whole request (a property test checks it): each processor sees an item as the ones
//! before it left it, and counts what it did in the same units.

use bytes::Bytes;

use super::items::point_count;
use super::msg::Msg;
use super::rewrite::{Rewrite, rewrite};
use super::{At, Native, Notes, Tally};
use crate::signal::Signal;

/// Splits processors (in chain order) into runs that can share one walk: a processor that
/// edits resources after one that edits items starts a new run.
pub fn plan(on_resources: impl IntoIterator<Item = bool>) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut items_seen = false;
    for (i, resources) in on_resources.into_iter().enumerate() {
        if i == 0 || resources && items_seen {
            starts.push(i);
            items_seen = false;
        }
        items_seen |= !resources;
    }
    starts
}

/// One processor's part in a walk, and what it did.
pub struct Step<'c> {
    native: &'c dyn Native,
    on_resources: bool,
    /// Items it saw (data points for metrics).
    pub seen: u64,
    /// What it did to them.
    pub tally: Tally,
    notes: Notes,
    /// It changed the resource of the group being walked.
    changed_resource: bool,
}

/// A walk of one request of `signal` through `steps`.
struct Walk<'s, 'c> {
    signal: Signal,
    steps: &'s mut [Step<'c>],
}

impl Rewrite for Walk<'_, '_> {
    fn resource(&mut self, resource: &mut Msg) {
        for st in self.steps.iter_mut() {
            st.changed_resource = st.on_resources && st.native.resource(self.signal, resource);
        }
    }

    fn item(&mut self, resource: &Msg, scope: &Msg, item: &mut Msg) -> bool {
        // What the item counts for: one, or a metric's data points.
        let mut weight = match self.signal {
            Signal::Metrics => point_count(item.view()) as u64,
            _ => 1,
        };
        let at = At { resource, scope };
        for st in self.steps.iter_mut() {
            if weight == 0 {
                break;
            }
            st.seen += weight;
            if st.on_resources {
                if st.changed_resource {
                    st.tally.modified += weight;
                }
                continue;
            }
            let t = st.native.item(self.signal, &at, item, &mut st.notes);
            st.tally.dropped += t.dropped;
            st.tally.modified += t.modified;
            weight = match self.signal {
                Signal::Metrics => weight.saturating_sub(t.dropped),
                _ if t.dropped > 0 => 0,
                _ => weight,
            };
        }
        weight > 0
    }
}

/// What a walk made of a request.
pub enum Walked {
    /// No processor changed anything.
    Unchanged,
    /// The request rewritten.
    Rewritten(Bytes),
    /// The request did not split into fields (unreachable on checked requests).
    Malformed,
}

/// Runs `natives` (all handling `signal`) over `req`, a checked request; returns each one's
/// step (what it saw and did) and the result.
pub fn run<'c>(
    signal: Signal,
    natives: impl IntoIterator<Item = &'c dyn Native>,
    req: &Bytes,
) -> (Vec<Step<'c>>, Walked) {
    let mut steps: Vec<Step<'c>> = natives
        .into_iter()
        .map(|native| Step {
            native,
            on_resources: native.on_resources(),
            seen: 0,
            tally: Tally::default(),
            notes: Notes::default(),
            changed_resource: false,
        })
        .collect();
    let out = rewrite(
        req,
        &mut Walk {
            signal,
            steps: &mut steps,
        },
    );
    for st in &mut steps {
        st.native.finish(&mut st.notes);
    }
    let changed = steps
        .iter()
        .any(|s| s.tally.dropped > 0 || s.tally.modified > 0);
    let walked = match out {
        None => Walked::Malformed,
        Some(_) if !changed => Walked::Unchanged,
        Some(bytes) => Walked::Rewritten(bytes.into()),
    };
    (steps, walked)
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn a_resource_processor_after_an_item_processor_starts_a_new_run() {
        assert_eq!(plan([true, false, false]), [0]);
        assert_eq!(plan([true, true, false]), [0]);
        assert_eq!(plan([false, true, false]), [0, 1]);
        assert_eq!(plan([false, false, true, true, false, true]), [0, 2, 5]);
        assert!(plan([]).is_empty());
    }
}
