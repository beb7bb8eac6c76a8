//! Versioned JSON for every report a user may want to store or ship: the
//! owner report ([`OwnerReport::to_json`](crate::OwnerReport::to_json)),
//! a reservation failure, an audit, fragmentation statistics, the
//! tracker's counters and the arena's counters. Each is an object with `"version"`
//! ([`REPORT_VERSION`]) and `"kind"` first; acquirers appear as the owner
//! report's [`Owner`] objects (function, subsystem, location).
//!
//! The reports that are plain data read back with `from_json`
//! ([`OwnerReport::from_json`](crate::OwnerReport::from_json),
//! [`FragStats::from_json`], [`TrackerStats::from_json`], [`Stats::from_json`],
//! [`ArenaMap::from_json`](crate::svg::ArenaMap::from_json)), so a tool
//! (`pinowner-report`) can render a report a service wrote. A failure and
//! an audit name acquirers by static sites, so they stay JSON documents to
//! read as such.
//!
//! The whole module needs the `serde` feature (on by default).

use core::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ReportJsonError;

use crate::alloc::FragStats;
use crate::audit::Audit;
use crate::reservation::{AcquirerGroup, ContigFailure};
use crate::stats::Stats;
use crate::tracker::{Owner, OwnerReport, TrackerStats, REPORT_VERSION};
use crate::Pfn;

#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    version: u32,
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` as pretty JSON, with the version and its kind first.
fn versioned<T: Serialize>(kind: &'static str, body: &T) -> String {
    serde_json::to_string_pretty(&Versioned { version: REPORT_VERSION, kind, body })
        .expect("plain data always serializes")
}

/// Reads a report of `kind` written by a `to_json`: checks its kind and
/// that its version is one this crate reads, then its shape.
pub(crate) fn from_versioned<T: DeserializeOwned>(kind: &'static str, text: &str) -> Result<T, ReportJsonError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(ReportJsonError::Json)?;
    let found = v.get("kind").and_then(|k| k.as_str()).unwrap_or("(none)");
    if found != kind {
        return Err(ReportJsonError::Kind { kind: found.to_owned(), expected: kind });
    }
    let version = v.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if version == 0 || version > u64::from(REPORT_VERSION) {
        return Err(ReportJsonError::Version { version, supported: REPORT_VERSION });
    }
    serde_json::from_value(v).map_err(ReportJsonError::Json)
}

#[derive(Serialize)]
struct Group {
    acquirer: Option<Owner>,
    blocks: usize,
    refs: u32,
    pins: u32,
}

fn groups(g: &[AcquirerGroup]) -> Vec<Group> {
    g.iter()
        .map(|g| Group { acquirer: g.acquirer.map(Owner::of), blocks: g.blocks, refs: g.refs, pins: g.pins })
        .collect()
}

#[derive(Serialize)]
struct Busy {
    head: Pfn,
    order: u8,
    pages_in_window: Range<Pfn>,
    refcount: u32,
    pincount: u32,
    flags: String,
    zone: String,
    attributed: Option<Owner>,
    attributed_pin: bool,
    unmovable: String,
    unmovable_temporary: bool,
}

#[derive(Serialize)]
struct Waited {
    waited_ns: u64,
    attempts: u32,
    releases: u64,
    events: u64,
}

#[derive(Serialize)]
struct Failure {
    reason: String,
    window: Range<Pfn>,
    windows_considered: usize,
    busy_pages: usize,
    holders: u32,
    pins: u32,
    attributed: u32,
    busy: Vec<Busy>,
    movable: usize,
    elsewhere: Vec<Busy>,
    by_acquirer: Vec<Group>,
    waited: Option<Waited>,
}

fn busy(b: &crate::BusyBlock) -> Busy {
    Busy {
        head: b.head,
        order: b.order,
        pages_in_window: b.pages_in_window.clone(),
        refcount: b.state.refcount,
        pincount: b.state.pincount,
        flags: b.state.flags.to_string(),
        zone: b.zone.to_string(),
        attributed: b.attributed.map(|(_, a)| Owner::of(a)),
        attributed_pin: b.attributed_pin,
        unmovable: b.why.to_string(),
        unmovable_temporary: b.why.is_temporary(),
    }
}

impl ContigFailure {
    /// The failure as pretty-printed, versioned JSON (kind
    /// `"contig_failure"`): the window, every busy block with its counts
    /// and attributed acquirer, and the ranking of who is in the way.
    ///
    /// ```
    /// use pinowner::{ContigError, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let block = arena.alloc_movable(0)?;
    /// let pin = block.pin(0)?; // a pinned page never moves
    /// let Err(ContigError::Busy(f)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
    /// let v: serde_json::Value = serde_json::from_str(&f.to_json())?;
    /// assert_eq!((v["version"].as_u64(), v["kind"].as_str()), (Some(1), Some("contig_failure")));
    /// assert_eq!(v["busy"][0]["head"], block.pfn());
    /// assert_eq!(v["busy"][0]["unmovable"], "pinned");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_json(&self) -> String {
        let body = Failure {
            reason: self.reason.to_string(),
            window: self.window.clone(),
            windows_considered: self.windows_considered,
            busy_pages: self.busy_pages(),
            holders: self.holders(),
            pins: self.pins(),
            attributed: self.attributed(),
            busy: self.busy.iter().map(busy).collect(),
            elsewhere: self.elsewhere.iter().map(busy).collect(),
            movable: self.movable,
            by_acquirer: groups(&self.by_acquirer()),
            waited: self.waited.map(|w| Waited {
                waited_ns: w.waited.as_nanos().min(u64::MAX as u128) as u64,
                attempts: w.attempts,
                releases: w.releases,
                events: w.events,
            }),
        };
        versioned("contig_failure", &body)
    }
}

#[derive(Serialize)]
struct Held {
    head: Pfn,
    order: u8,
    zone: String,
    refs: u32,
    pins: u32,
    contig: bool,
    latest: Option<Owner>,
    latest_pin: bool,
    raw_refs: u32,
    raw_pins: u32,
}

#[derive(Serialize)]
struct AuditJson {
    blocks: Vec<Held>,
    by_acquirer: Vec<Group>,
}

impl Audit {
    /// The audit as pretty-printed, versioned JSON (kind `"audit"`).
    pub fn to_json(&self) -> String {
        let body = AuditJson {
            blocks: self
                .blocks
                .iter()
                .map(|b| Held {
                    head: b.head,
                    order: b.order,
                    zone: b.zone.to_string(),
                    refs: b.refs,
                    pins: b.pins,
                    contig: b.contig,
                    latest: b.latest.map(Owner::of),
                    latest_pin: b.latest_pin,
                    raw_refs: b.raw.0,
                    raw_pins: b.raw.1,
                })
                .collect(),
            by_acquirer: groups(&self.by_acquirer),
        };
        versioned("audit", &body)
    }
}

impl FragStats {
    /// The statistics as pretty-printed, versioned JSON (kind
    /// `"frag_stats"`).
    pub fn to_json(&self) -> String {
        versioned("frag_stats", self)
    }

    /// Reads statistics written by [`to_json`](Self::to_json).
    ///
    /// ```
    /// use pinowner::{FragStats, PageArena};
    ///
    /// let arena = PageArena::builder().pages(64).build()?;
    /// let _held = arena.alloc(0)?;
    /// let stats = arena.frag_stats();
    /// assert_eq!(FragStats::from_json(&stats.to_json())?, stats);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReportJsonError`] if the text is not JSON of fragmentation
    /// statistics, is another kind of report, or has a newer schema.
    pub fn from_json(text: &str) -> Result<FragStats, ReportJsonError> {
        from_versioned("frag_stats", text)
    }
}

impl TrackerStats {
    /// The counters as pretty-printed, versioned JSON (kind
    /// `"tracker_stats"`).
    pub fn to_json(&self) -> String {
        versioned("tracker_stats", self)
    }

    /// Reads counters written by [`to_json`](Self::to_json).
    ///
    /// # Errors
    ///
    /// [`ReportJsonError`] as for [`FragStats::from_json`].
    pub fn from_json(text: &str) -> Result<TrackerStats, ReportJsonError> {
        from_versioned("tracker_stats", text)
    }
}

impl OwnerReport {
    /// The report as pretty-printed JSON (schema [`REPORT_VERSION`](crate::tracker::REPORT_VERSION), kind
    /// `"owner_report"`). Needs the `serde` feature (on by default).
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Kind<'a> {
            kind: &'static str,
            #[serde(flatten)]
            report: &'a OwnerReport,
        }
        serde_json::to_string_pretty(&Kind { kind: "owner_report", report: self }).expect("a report always serializes")
    }

    /// Reads a report written by [`to_json`](OwnerReport::to_json), for example
    /// to render it elsewhere (its `Display` text, [`folded`](OwnerReport::folded)
    /// or [`folded_holders`](OwnerReport::folded_holders) stacks).
    ///
    /// ```
    /// use pinowner::{ContigError, EventKind, OwnerReport, PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let frame = arena.alloc_movable(0)?.into_block(); // keeps its address
    /// let Err(ContigError::Busy(_)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
    /// let pin = frame.pin(0)?; // recorded: the frame is armed
    /// let report = arena.owner_report();
    /// let read = OwnerReport::from_json(&report.to_json())?;
    /// assert_eq!(read, report);
    /// assert!(read.pages[0].outstanding.iter().any(|h| h.kind == EventKind::Pin), "the pin is outstanding");
    /// # drop(pin);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReportJsonError`] if the text is
    /// not JSON of an owner report, is another kind of report, or has a
    /// newer schema.
    pub fn from_json(text: &str) -> Result<OwnerReport, ReportJsonError> {
        from_versioned("owner_report", text)
    }
}

impl Stats {
    /// The counters as pretty-printed, versioned JSON (kind `"stats"`):
    /// `zones` (per-order `allocs`, `frees`, `failures`), `reservations`
    /// and `tracker` (as [`TrackerStats::to_json`] has it, without its own
    /// version).
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(16).build()?;
    /// drop(arena.alloc(0)?);
    /// let v: serde_json::Value = serde_json::from_str(&arena.stats().to_json())?;
    /// assert_eq!((v["version"].as_u64(), v["kind"].as_str()), (Some(1), Some("stats")));
    /// assert_eq!(v["zones"][0]["allocs"][0], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_json(&self) -> String {
        versioned("stats", self)
    }

    /// Reads counters written by [`to_json`](Self::to_json), for example a
    /// service's metrics dump, to render with `pinowner-report`.
    ///
    /// ```
    /// use pinowner::{PageArena, Stats};
    ///
    /// let arena = PageArena::builder().pages(16).build()?;
    /// drop(arena.alloc(1)?);
    /// let stats = arena.stats();
    /// assert_eq!(Stats::from_json(&stats.to_json())?, stats);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReportJsonError`] as for [`FragStats::from_json`].
    pub fn from_json(text: &str) -> Result<Stats, ReportJsonError> {
        from_versioned("stats", text)
    }
}
