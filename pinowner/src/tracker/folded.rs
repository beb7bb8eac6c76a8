//! Folded stacks for flamegraph tools: the busy paths (events) and the
//! holders in the way (outstanding holds).

use std::collections::{BTreeMap, HashMap};

use super::report::{Owner, OwnerReport, StackGroupKind};

impl OwnerReport {
    /// Folded stacks for flamegraph tools (`inferno`, `flamegraph.pl`): one
    /// line per stack group, root first, weighted by its event count, under
    /// a `acquire`/`release` root frame. This answers "which paths were
    /// busy"; for "who is in the way" see
    /// [`folded_holders`](Self::folded_holders).
    pub fn folded(&self) -> String {
        let mut out = String::new();
        for s in &self.stacks {
            let root = match s.kind {
                StackGroupKind::Acquire => "acquire",
                StackGroupKind::Release => "release",
            };
            fold_line(&mut out, root, &folded_frames(&s.frames), u64::from(s.count));
        }
        out
    }

    /// Folded stacks of the holders in the way, for a flamegraph whose
    /// widths are what blocks the reservation: one line per outstanding
    /// holder (its acquire's stack, root first, under a `held` root frame),
    /// weighted by `weight`: one per hold, or the time held. Holders whose
    /// acquire has no stack here (found at arming, or a stack under the
    /// report's threshold) appear under their site; counts held from
    /// before arming that nobody is named for, under
    /// `(unattributed, from before arming)`. Runtime frames below `main` or
    /// the thread's start are trimmed, so identical paths from different
    /// threads merge.
    pub fn folded_holders(&self, weight: HoldWeight) -> String {
        let frames: HashMap<u32, Vec<String>> = self
            .stacks
            .iter()
            .filter(|s| s.kind == StackGroupKind::Acquire && !s.frames.is_empty())
            .map(|s| (s.stack, folded_frames(&s.frames)))
            .collect();
        let site = |o: &Option<Owner>| vec![o.as_ref().map_or_else(|| "(unattributed)".to_owned(), owner_frame)];
        let mut lines: BTreeMap<Vec<String>, u64> = BTreeMap::new();
        for p in &self.pages {
            for h in &p.outstanding {
                let mut path = h.stack.and_then(|s| frames.get(&s).cloned()).unwrap_or_else(|| site(&h.owner));
                if h.from_arming {
                    path.push("(held since before arming)".to_owned());
                }
                // Saturating here and below: a report read back from JSON
                // may carry any counts.
                let w = lines.entry(path).or_default();
                *w = w.saturating_add(match weight {
                    HoldWeight::Holds => 1,
                    HoldWeight::HeldMicros => (h.held_ns / 1_000).max(1),
                });
            }
            let unnamed = u64::from(p.unrecorded_refs) + u64::from(p.unrecorded_pins);
            if unnamed > 0 && weight == HoldWeight::Holds {
                let w = lines.entry(vec!["(unattributed, from before arming)".to_owned()]).or_default();
                *w = w.saturating_add(unnamed);
            }
        }
        let mut out = String::new();
        for (path, w) in lines {
            fold_line(&mut out, "held", &path, w);
        }
        out
    }
}

/// What [`OwnerReport::folded_holders`] weighs each holder by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldWeight {
    /// One per count held (unattributed counts from before arming
    /// included).
    Holds,
    /// Microseconds held so far (recorded holders only: the others' start
    /// is unknown).
    HeldMicros,
}

/// A holder's site as one flamegraph frame.
fn owner_frame(o: &Owner) -> String {
    match (&o.function, &o.subsystem) {
        (Some(f), Some(s)) => format!("{f} [{s}]"),
        (Some(f), None) => f.clone(),
        _ => o.location.clone(),
    }
}

/// Frames (innermost first, as `frame at file:line`) as folded frames: root
/// first, functions only (file and line would split one function into many
/// boxes), and the runtime's frames below `main` or the thread's start
/// dropped, so the same path from two threads is one box.
fn folded_frames(frames: &[String]) -> Vec<String> {
    const RUNTIME: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "<std::",
        "<core::",
        "<alloc::",
        "__rust",
        "__libc",
        "_start",
        "start_thread",
        "clone",
        "test::",
        "<F as ",
        "<fn(",
    ];
    let mut root_first: Vec<String> =
        frames.iter().rev().map(|f| f.split(" at ").next().unwrap_or(f).replace(';', ":")).collect();
    let runtime = |f: &String| f == "main" || RUNTIME.iter().any(|r| f.starts_with(r));
    let keep = root_first.iter().position(|f| !runtime(f)).unwrap_or(0);
    root_first.drain(..keep);
    root_first
}

fn fold_line(out: &mut String, root: &str, path: &[String], weight: u64) {
    out.push_str(root);
    for f in path {
        out.push(';');
        out.push_str(f);
    }
    out.push_str(&format!(" {weight}\n"));
}
