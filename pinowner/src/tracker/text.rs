//! The owner report as text: the kernel's `pfn=0x… count=… pincount=…`
//! style, with ` => frame` lines under each event.

use core::fmt;
use std::collections::HashMap;

use super::report::{OwnerReport, ReleaseRecord, StackGroup, StackGroupKind};
use super::EventKind;

fn secs(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

fn or_none<T: fmt::Display>(o: &Option<T>) -> String {
    o.as_ref().map_or_else(|| "(no site)".to_owned(), |x| x.to_string())
}

impl fmt::Display for OwnerReport {
    /// Kernel-style text: a summary, the armings, one block per page with
    /// ` => frame` lines, then the site, subsystem and stack views.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stacks: HashMap<u32, &StackGroup> = self.stacks.iter().map(|s| (s.stack, s)).collect();
        let frames = |f: &mut fmt::Formatter<'_>, stack: Option<u32>| -> fmt::Result {
            match stack.and_then(|s| stacks.get(&s)) {
                Some(g) => g.frames.iter().try_for_each(|fr| writeln!(f, "     => {fr}")),
                None => Ok(()),
            }
        };
        writeln!(
            f,
            "pinowner owner report v{}: {} armings{}, {} pages, {} events ({} recorded in all, {} dropped){}{}",
            self.version,
            self.armings.len(),
            if self.armings_dropped > 0 {
                format!(" ({} older ones forgotten)", self.armings_dropped)
            } else {
                String::new()
            },
            self.pages.len(),
            self.events_in_report,
            self.events_recorded,
            self.events_dropped,
            self.reason_filter.as_ref().map_or(String::new(), |r| format!(", reason={r}")),
            self.range_filter.as_ref().map_or(String::new(), |r| format!(", pfn {:#x}..{:#x}", r.start, r.end)),
        )?;
        for a in &self.armings {
            writeln!(
                f,
                "arming #{}: reason={} window={:#x}..{:#x} blocks={} at +{} by {}",
                a.id,
                a.reason,
                a.window.start,
                a.window.end,
                a.blocks,
                secs(a.at_ns),
                or_none(&a.by)
            )?;
        }
        for p in &self.pages {
            writeln!(
                f,
                "pfn={:#x} order={} count={} pincount={} reason={} armed={}{} events={} dropped={}",
                p.pfn,
                p.order,
                p.count,
                p.pincount,
                p.reason.as_deref().unwrap_or("-"),
                if p.armed { "yes" } else { "no" },
                p.disarmed.map_or(String::new(), |c| format!(" ({})", EventKind::Disarm(c))),
                p.events,
                p.dropped
            )?;
            let recorded = p.outstanding.len() as u32;
            writeln!(
                f,
                "  holders: {} ({} recorded since arming, {} refs and {} pins from before){}",
                p.holders(),
                recorded,
                p.unrecorded_refs,
                p.unrecorded_pins,
                p.attributed.as_ref().map_or(String::new(), |a| format!("; latest acquirer {a}"))
            )?;
            for h in &p.outstanding {
                let arming = if h.from_arming { " (found at arming: held at least)" } else { "" };
                let long = if h.long { " (a long pin)" } else { "" };
                let found = format!("{arming}{long}");
                writeln!(
                    f,
                    "  holding {} pfn={:#x} for {}{found} by {} thread={}",
                    h.kind,
                    h.pfn,
                    secs(h.held_ns),
                    or_none(&h.owner),
                    h.thread
                )?;
                frames(f, h.stack)?;
            }
            // Releases with the same path, site and acquirer, on one line.
            let mut groups: Vec<(&ReleaseRecord, u32, u64)> = Vec::new();
            for r in &p.releases {
                let same = |g: &ReleaseRecord| {
                    g.kind == r.kind
                        && g.site == r.site
                        && g.stack == r.stack
                        && g.acquired_by == r.acquired_by
                        && g.held_ns.is_some() == r.held_ns.is_some()
                        && (g.left == (0, 0)) == (r.left == (0, 0))
                };
                let held = r.held_ns.or(r.held_at_least_ns).unwrap_or(0);
                match groups.iter_mut().find(|(g, _, _)| same(g)) {
                    Some((_, n, max)) => {
                        *n += 1;
                        *max = (*max).max(held);
                    }
                    None => groups.push((r, 1, held)),
                }
            }
            for (r, n, max) in groups {
                let times = if n > 1 { format!(" x{n}") } else { String::new() };
                let how = match (&r.held_ns, &r.acquired_by) {
                    (Some(_), Some(a)) => format!("held up to {} (taken by {a})", secs(max)),
                    (Some(_), None) => format!("held up to {}", secs(max)),
                    (None, Some(a)) => format!("taken before arming by {a}, held at least {}", secs(max)),
                    (None, None) => format!("taken before arming, held at least {}", secs(max)),
                };
                let freed = if r.left == (0, 0) { "; freed the block" } else { "" };
                writeln!(
                    f,
                    "  {}{times} pfn={:#x} at +{} {how}{freed}; site={} thread={}",
                    r.kind,
                    r.pfn,
                    secs(r.at_ns),
                    or_none(&r.site),
                    r.thread
                )?;
                frames(f, r.stack)?;
            }
        }
        if !self.by_site.is_empty() {
            writeln!(f, "sites (most held now, then longest hold):")?;
            for (i, s) in self.by_site.iter().enumerate() {
                writeln!(
                    f,
                    "  {}. {}: {} refs, {} pins on {} pages; {} acquires, {} releases recorded; longest hold {}",
                    i + 1,
                    or_none(&s.owner),
                    s.refs,
                    s.pins,
                    s.pages,
                    s.acquires,
                    s.releases,
                    secs(s.longest_hold_ns)
                )?;
            }
        }
        if !self.by_subsystem.is_empty() {
            writeln!(f, "holders by subsystem:")?;
            for s in &self.by_subsystem {
                writeln!(
                    f,
                    "  {}: {} refs, {} pins ({} sites)",
                    s.subsystem.as_deref().unwrap_or("(none)"),
                    s.refs,
                    s.pins,
                    s.sites
                )?;
            }
        }
        if !self.stacks.is_empty() || self.stacks_below_threshold > 0 {
            writeln!(f, "stacks ({} below threshold not shown):", self.stacks_below_threshold)?;
            for s in &self.stacks {
                writeln!(
                    f,
                    "  {} stack #{}: {} events on {} pages, {} outstanding",
                    match s.kind {
                        StackGroupKind::Acquire => "acquire",
                        StackGroupKind::Release => "release",
                    },
                    s.stack,
                    s.count,
                    s.pages,
                    s.outstanding
                )?;
                for fr in &s.frames {
                    writeln!(f, "     => {fr}")?;
                }
            }
        }
        write!(f, "depot: {} stacks, {} not stored", self.depot_stacks, self.depot_failures)
    }
}
