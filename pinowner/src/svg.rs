//! A map of the arena as a picture: every page coloured by its state, the
//! zones outlined, armed pages marked, and the window of a failed
//! reservation drawn over them.
//!
//! [`PageArena::map`] takes an [`ArenaMap`]: the pages as runs of one state
//! (a run is a maximal stretch of pages whose blocks share a [`PageClass`]
//! and armed flag), the zones, and the window of the latest failed
//! reservation if the arena armed one (kept after the arming ends, until a
//! later failure replaces it). [`ArenaMap::to_svg`] draws it with plain
//! string formatting (no drawing library), at most three `<rect>`s per run,
//! each with a `<title>` a browser shows on hover;
//! [`PageArena::map_svg`] and [`ContigFailure::map_svg`] do both in one
//! call. With the `serde` feature the map is also versioned JSON
//! ([`ArenaMap::to_json`], [`ArenaMap::from_json`]), which the
//! `pinowner-report` tool renders.
//!
//! ```
//! use pinowner::{ContigError, PageArena, Reason};
//!
//! let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
//! let frame = arena.alloc_movable(0)?;
//! let pin = frame.pin(0)?;
//! let Err(ContigError::Busy(failure)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
//! let svg = failure.map_svg(&arena);
//! assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
//! assert!(svg.contains(r#"class="pinned armed""#), "the pinned frame is drawn pinned and armed");
//! std::fs::write(std::env::temp_dir().join("arena.svg"), svg)?;
//! # drop(pin);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt::Write as _;
use core::ops::Range;

use crate::alloc::ZoneKind;
use crate::page::state::{self, CONTIG, FREE, TRACKED};
use crate::reservation::ContigFailure;
use crate::{PageArena, Pfn};

/// What a run of pages is, as the map colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PageClass {
    /// In a free block (on a buddy list, in a thread cache, or isolated).
    Free,
    /// Allocated and held by references only.
    Used,
    /// Allocated and pinned (at least one pin on its block).
    Pinned,
    /// Part of a committed contiguous run.
    Contig,
}

impl PageClass {
    /// The name the SVG's `class` attributes and the JSON use.
    pub const fn name(self) -> &'static str {
        match self {
            PageClass::Free => "free",
            PageClass::Used => "used",
            PageClass::Pinned => "pinned",
            PageClass::Contig => "contig",
        }
    }

    /// The fill colour on the map.
    pub const fn colour(self) -> &'static str {
        match self {
            PageClass::Free => "#e6e6e6",
            PageClass::Used => "#6f9fd8",
            PageClass::Pinned => "#e8842c",
            PageClass::Contig => "#58a858",
        }
    }

    const ALL: [PageClass; 4] = [PageClass::Free, PageClass::Used, PageClass::Pinned, PageClass::Contig];

    /// The class of a block from its head's state word.
    fn of_word(w: u64) -> PageClass {
        if w & FREE != 0 {
            PageClass::Free
        } else if w & CONTIG != 0 {
            PageClass::Contig
        } else if state::pins(w) > 0 {
            PageClass::Pinned
        } else {
            PageClass::Used
        }
    }
}

/// The outline colour of armed pages.
pub const ARMED_COLOUR: &str = "#b00020";
/// The outline colour of a failed reservation's window.
pub const WINDOW_COLOUR: &str = "#000000";

/// A stretch of pages drawn alike.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PageRun {
    /// The pages.
    pub pages: Range<Pfn>,
    /// Their state.
    pub class: PageClass,
    /// Armed by a failed reservation: their counts are being recorded.
    pub armed: bool,
}

/// A zone's pages on the map.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MapZone {
    /// Which zone.
    pub kind: ZoneKind,
    /// Its pages.
    pub pages: Range<Pfn>,
}

/// A picture of the arena's pages: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArenaMap {
    /// The pages drawn (the whole arena, or a failure's window).
    pub pages: Range<Pfn>,
    /// Page size in bytes.
    pub page_size: usize,
    /// The zones, in page order (empty zones left out).
    pub zones: Vec<MapZone>,
    /// The runs, in page order. Pages caught mid-split while the map was
    /// taken are in no run (drawn as background).
    pub runs: Vec<PageRun>,
    /// The window of a failed reservation, drawn outlined.
    pub window: Option<Range<Pfn>>,
}

/// Pushes `pages` of `class` onto `runs`, extending the last run when it
/// is adjacent and alike.
fn push_run(runs: &mut Vec<PageRun>, pages: Range<Pfn>, class: PageClass, armed: bool) {
    if pages.is_empty() {
        return;
    }
    match runs.last_mut() {
        Some(last) if last.pages.end == pages.start && last.class == class && last.armed == armed => {
            last.pages.end = pages.end;
        }
        _ => runs.push(PageRun { pages, class, armed }),
    }
}

impl PageArena {
    /// A map of every page: its state, zone and armed flag, with the window
    /// of the latest failed reservation that armed pages (if any). A
    /// snapshot taken without locks: counts may change while it is taken,
    /// each block is read once.
    pub fn map(&self) -> ArenaMap {
        let mut zones = Vec::new();
        let mut runs = Vec::new();
        for z in &self.zones {
            if z.start == z.end {
                continue;
            }
            zones.push(MapZone { kind: z.kind, pages: z.start as Pfn..z.end as Pfn });
            self.for_each_block(z.start, z.end, |head, w| {
                let end = (head as Pfn + (1usize << state::order(w))).min(z.end as Pfn);
                push_run(&mut runs, head as Pfn..end, PageClass::of_word(w), w & TRACKED != 0);
            });
        }
        let window = self.tracker.get().and_then(|t| {
            t.armings().into_iter().rev().find(|a| a.id != crate::tracker::EAGER_ARMING).map(|a| a.window)
        });
        ArenaMap { pages: 0..self.pages(), page_size: self.page_size(), zones, runs, window }
    }

    /// The [`map`](Self::map) as an SVG document.
    ///
    /// ```
    /// use pinowner::PageArena;
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let _pinned = arena.alloc(0)?.pin(0)?;
    /// let svg = arena.map_svg();
    /// assert_eq!(svg.matches(r#"class="pinned""#).count(), 1, "one pinned run");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_svg(&self) -> String {
        self.map().to_svg()
    }
}

impl ContigFailure {
    /// The arena's [map](PageArena::map) with this failure's window
    /// outlined, as an SVG document.
    pub fn map_svg(&self, arena: &PageArena) -> String {
        let mut map = arena.map();
        map.window = Some(self.window.clone());
        map.to_svg()
    }
}

impl ArenaMap {
    /// A map of the failure's window alone, as the failure saw it: its
    /// busy blocks (pinned or used, armed since the failure arms them), and
    /// the rest of the window free (the reservation found it free or made
    /// it so). For a failure kept without its arena.
    pub fn from_failure(failure: &ContigFailure, page_size: usize) -> ArenaMap {
        let zone = failure.busy.first().map_or(ZoneKind::Movable, |b| b.zone);
        let busy = failure.busy.iter().map(|b| {
            let class = if b.state.pincount > 0 { PageClass::Pinned } else { PageClass::Used };
            (b.pages_in_window.clone(), class)
        });
        ArenaMap::of_window(failure.window.clone(), zone, page_size, busy)
    }

    /// A map of a failed window in `zone` with its `busy` pages (in page
    /// order, each armed), the rest free: what [`from_failure`](Self::from_failure)
    /// draws, for a failure read back from JSON. `page_size` 0 means
    /// unknown.
    pub fn of_window(
        window: Range<Pfn>,
        zone: ZoneKind,
        page_size: usize,
        busy: impl IntoIterator<Item = (Range<Pfn>, PageClass)>,
    ) -> ArenaMap {
        let mut runs = Vec::new();
        let mut at = window.start;
        for (pages, class) in busy {
            let pages = pages.start.max(at)..pages.end.min(window.end);
            push_run(&mut runs, at..pages.start, PageClass::Free, false);
            at = pages.end.max(at);
            push_run(&mut runs, pages, class, true);
        }
        push_run(&mut runs, at..window.end, PageClass::Free, false);
        ArenaMap {
            pages: window.clone(),
            page_size,
            zones: vec![MapZone { kind: zone, pages: window.clone() }],
            runs,
            window: Some(window),
        }
    }

    /// Pages in each class (armed pages counted in their class too) and
    /// armed pages, for the legend and for tests.
    ///
    /// Counts saturate: a map read back from JSON whose runs overlap or
    /// span more pages than a `usize` counts (a corrupted report) gives
    /// large counts, never a panic.
    pub fn counts(&self) -> MapCounts {
        let mut c = MapCounts::default();
        for r in &self.runs {
            let n = r.pages.len();
            let class = match r.class {
                PageClass::Free => &mut c.free,
                PageClass::Used => &mut c.used,
                PageClass::Pinned => &mut c.pinned,
                PageClass::Contig => &mut c.contig,
            };
            *class = class.saturating_add(n);
            if r.armed {
                c.armed = c.armed.saturating_add(n);
            }
        }
        c
    }

    /// The map as a standalone SVG document: a grid of pages in rows (a
    /// power of two of pages per row, about four times wider than high),
    /// each run at most three rectangles (the rest of its first row, its
    /// full rows, the start of its last row), coloured by [`PageClass`], armed runs outlined in
    /// [`ARMED_COLOUR`], zones outlined dashed, the window outlined in
    /// [`WINDOW_COLOUR`], a legend with page counts below.
    pub fn to_svg(&self) -> String {
        let n = self.pages.len().max(1);
        // Columns: the power of two nearest sqrt(4 n), so rows are about a
        // quarter as many; cells 16 px at most, the grid 1024 px at most.
        // (`n` may be any `usize` in a map read back from JSON: past 2^63
        // pages `next_power_of_two` has no answer, and the columns stay
        // below 2^33 whatever `n` is.)
        let cols = ((4.0 * n as f64).sqrt() as usize)
            .next_power_of_two()
            .clamp(1, n.checked_next_power_of_two().unwrap_or(1 << (usize::BITS - 1)));
        let rows = n.div_ceil(cols);
        let cell = (1024.0 / cols as f64).min(16.0);
        let (left, top) = (72.0, 28.0);
        let grid_w = cols as f64 * cell;
        let grid_h = rows as f64 * cell;
        let legend_h = 54.0;
        let width = (left + grid_w + 16.0).max(560.0);
        let height = top + grid_h + legend_h;
        let stroke = (cell / 5.0).clamp(0.3, 1.5);

        let mut s = String::with_capacity(256 + self.runs.len() * 160);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="monospace" font-size="11">"#
        );
        let _ = writeln!(
            s,
            r##"<rect class="background" x="0" y="0" width="{width:.0}" height="{height:.0}" fill="#ffffff"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="4" y="16">pinowner arena map: pages {:#x}..{:#x}{}, {cols} per row</text>"#,
            self.pages.start,
            self.pages.end,
            if self.page_size > 0 { format!(" of {} KiB", self.page_size / 1024) } else { String::new() }
        );
        // Row labels: the first page of every row, or of every 2^k-th row
        // when rows are thinner than a line of text.
        let every = if cell < 13.0 { ((13.0 / cell).ceil() as usize).next_power_of_two() } else { 1 };
        for row in (0..rows).step_by(every) {
            let y = top + row as f64 * cell + cell.min(11.0);
            let _ = writeln!(s, r#"<text x="4" y="{y:.1}">{:#x}</text>"#, self.pages.start + row * cols);
        }
        // Each run as at most three rectangles: the rest of its first row,
        // the full rows, the start of its last row.
        let segments = |pages: &Range<Pfn>| -> Vec<(f64, f64, f64, f64)> {
            let mut out = Vec::new();
            let (start, end) = (pages.start.max(self.pages.start), pages.end.min(self.pages.end));
            let mut p = start;
            while p < end {
                let off = p - self.pages.start;
                let (row, col) = (off / cols, off % cols);
                let (x, y) = (left + col as f64 * cell, top + row as f64 * cell);
                if col == 0 && end - p >= cols {
                    let full = (end - p) / cols;
                    out.push((x, y, cols as f64 * cell, full as f64 * cell));
                    p += full * cols;
                } else {
                    let len = (cols - col).min(end - p);
                    out.push((x, y, len as f64 * cell, cell));
                    p += len;
                }
            }
            out
        };
        // Armed runs last, so no neighbour covers their outline.
        let armed_stroke = (cell / 2.5).clamp(0.8, 2.0);
        for r in self.runs.iter().filter(|r| !r.armed).chain(self.runs.iter().filter(|r| r.armed)) {
            let armed = if r.armed { " armed" } else { "" };
            let outline = if r.armed {
                format!(r#" stroke="{ARMED_COLOUR}" stroke-width="{armed_stroke:.2}""#)
            } else {
                String::new()
            };
            for (x, y, w, h) in segments(&r.pages) {
                let _ = writeln!(
                    s,
                    r#"<rect class="{}{armed}" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="{}"{outline}><title>{:#x}..{:#x}: {} pages, {}{armed}</title></rect>"#,
                    r.class.name(),
                    r.class.colour(),
                    r.pages.start,
                    r.pages.end,
                    r.pages.len(),
                    r.class.name(),
                );
            }
        }
        for z in &self.zones {
            for (x, y, w, h) in segments(&z.pages) {
                let _ = writeln!(
                    s,
                    r##"<rect class="zone {}" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="none" stroke="#555555" stroke-width="0.5" stroke-dasharray="3,2"/>"##,
                    z.kind
                );
            }
        }
        if let Some(win) = &self.window {
            for (x, y, w, h) in segments(win) {
                let _ = writeln!(
                    s,
                    r#"<rect class="window" x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}" fill="none" stroke="{WINDOW_COLOUR}" stroke-width="{:.2}"><title>failed window {:#x}..{:#x}</title></rect>"#,
                    (stroke * 2.0).max(1.0),
                    win.start,
                    win.end
                );
            }
        }
        // The legend.
        let c = self.counts();
        let y = top + grid_h + 20.0;
        let mut x = 4.0;
        for class in PageClass::ALL {
            let pages = match class {
                PageClass::Free => c.free,
                PageClass::Used => c.used,
                PageClass::Pinned => c.pinned,
                PageClass::Contig => c.contig,
            };
            let _ = writeln!(
                s,
                r#"<rect class="legend" x="{x:.0}" y="{:.0}" width="10" height="10" fill="{}"/><text x="{:.0}" y="{y:.0}">{} {pages}</text>"#,
                y - 9.0,
                class.colour(),
                x + 14.0,
                class.name()
            );
            x += 110.0;
        }
        let _ = writeln!(
            s,
            r##"<rect class="legend" x="{x:.0}" y="{:.0}" width="10" height="10" fill="#ffffff" stroke="{ARMED_COLOUR}" stroke-width="1.5"/><text x="{:.0}" y="{y:.0}">armed {}</text>"##,
            y - 9.0,
            x + 14.0,
            c.armed
        );
        let zones: Vec<String> =
            self.zones.iter().map(|z| format!("{} {:#x}..{:#x}", z.kind, z.pages.start, z.pages.end)).collect();
        let window = self
            .window
            .as_ref()
            .map_or_else(String::new, |w| format!("; failed window {:#x}..{:#x} (outlined)", w.start, w.end));
        let _ = writeln!(s, r#"<text x="4" y="{:.0}">zones (dashed): {}{window}</text>"#, y + 20.0, zones.join(", "));
        s.push_str("</svg>\n");
        s
    }
}

/// Pages of an [`ArenaMap`] in each class; see [`ArenaMap::counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapCounts {
    /// Free pages.
    pub free: usize,
    /// Pages held by references only.
    pub used: usize,
    /// Pinned pages.
    pub pinned: usize,
    /// Pages of committed contiguous runs.
    pub contig: usize,
    /// Armed pages (also counted in their class).
    pub armed: usize,
}

#[cfg(feature = "serde")]
mod json {
    use super::ArenaMap;
    use crate::error::ReportJsonError;
    use crate::tracker::REPORT_VERSION;

    #[derive(serde::Serialize)]
    struct Out<'a> {
        version: u32,
        kind: &'static str,
        #[serde(flatten)]
        map: &'a ArenaMap,
    }

    impl ArenaMap {
        /// The map as pretty-printed, versioned JSON (kind `"arena_map"`,
        /// like the other reports). Needs the `serde` feature.
        pub fn to_json(&self) -> String {
            serde_json::to_string_pretty(&Out { version: REPORT_VERSION, kind: "arena_map", map: self })
                .expect("plain data always serializes")
        }

        /// Reads a map written by [`to_json`](Self::to_json).
        ///
        /// ```
        /// use pinowner::{svg::ArenaMap, PageArena};
        ///
        /// let arena = PageArena::builder().pages(16).build()?;
        /// let map = arena.map();
        /// assert_eq!(ArenaMap::from_json(&map.to_json())?, map);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        ///
        /// # Errors
        ///
        /// [`ReportJsonError`] if the text is not JSON of an arena map, is
        /// another kind of report, or has a newer schema version.
        pub fn from_json(text: &str) -> Result<ArenaMap, ReportJsonError> {
            crate::json::from_versioned("arena_map", text)
        }
    }
}
