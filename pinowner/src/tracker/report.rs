//! Owner reports: what the tracker saw, turned into something to act on.
//!
//! A report pairs each recorded release with the acquire it closes (by the
//! acquisition's generation, which handles carry), so it can list the
//! holders still outstanding on every armed page — with their acquire
//! stacks and how long they have held — and every release path seen
//! ("all page pinning code paths", both directions). Holders that took their
//! count before the page was armed have no recorded acquire; the report
//! counts them, names the one the owner slot attributes, and never guesses
//! the rest.
//!
//! Views: per page (ranked by holders outstanding), by site, by subsystem
//! (a top-N of holders), and by stack with a count threshold (the kernel's
//! `page_owner_stacks/show_stacks`). Formats: `Display` text in the kernel's
//! `pfn=0x… count=… pincount=…` style with ` => frame` lines, JSON
//! ([`OwnerReport::to_json`], versioned by [`REPORT_VERSION`]) and folded
//! stacks for flamegraph tools ([`OwnerReport::folded`]).

use core::fmt;
use core::ops::Range;
use std::collections::{BTreeMap, HashMap};

use super::{thread_name, Arming, DisarmCause, Event, EventKind, Tracker, EAGER_ARMING};
use crate::depot::{Frame, StackHandle};
use crate::page::slot::Acquirer;
use crate::reservation::Reason;
use crate::{PageArena, Pfn};

/// The JSON schema version of [`OwnerReport`] and of every other report
/// with a `to_json` (`ContigFailure`, `Audit`, `FragStats`, `TrackerStats`).
pub const REPORT_VERSION: u32 = 1;

/// What a report covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportOptions {
    /// Only pages armed for this reason (the RFC's `migrate_reason` filter).
    pub reason: Option<Reason>,
    /// Only pages in this range.
    pub range: Option<Range<Pfn>>,
    /// Stack groups with fewer events than this are left out (counted in
    /// [`OwnerReport::stacks_below_threshold`]).
    pub threshold: usize,
    /// Frames shown per stack.
    pub frames: usize,
    /// Keep the raw events in the report (JSON only; off by default).
    pub events: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { reason: None, range: None, threshold: 1, frames: crate::depot::DEFAULT_DEPTH, events: false }
    }
}

/// An acquirer or releaser, resolved for rendering.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Owner {
    /// The `#[pin_tracked]` function (or `pin_scope!` name), if the count
    /// was taken inside one.
    pub function: Option<String>,
    /// Its subsystem.
    pub subsystem: Option<String>,
    /// The source location: the site's declaration, or the caller's line.
    pub location: String,
}

impl Owner {
    pub(crate) fn of(a: Acquirer) -> Owner {
        match a {
            Acquirer::Location(l) => {
                Owner { function: None, subsystem: None, location: format!("{}:{}:{}", l.file(), l.line(), l.column()) }
            }
            Acquirer::Site(s) => Owner {
                function: Some(s.name().to_owned()),
                subsystem: s.subsystem().map(str::to_owned),
                location: format!("{}:{}", s.file(), s.line()),
            },
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.function, &self.subsystem) {
            (Some(func), Some(sub)) => write!(f, "{func} [{sub}] ({})", self.location),
            (Some(func), None) => write!(f, "{func} ({})", self.location),
            _ => f.write_str(&self.location),
        }
    }
}

/// A thread, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ThreadRef {
    /// pinowner's thread number.
    pub index: u32,
    /// The thread's name, if it had one.
    pub name: Option<String>,
}

impl fmt::Display for ThreadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n}#{}", self.index),
            None => write!(f, "#{}", self.index),
        }
    }
}

/// An outstanding holder with a recorded acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Holder {
    /// `get`, `pin` or `alloc`.
    pub kind: EventKind,
    /// The page the count was taken through.
    pub pfn: Pfn,
    /// Who took it.
    pub owner: Option<Owner>,
    /// The thread that took it.
    pub thread: ThreadRef,
    /// Nanoseconds since the tracker started, at the acquire.
    pub since_ns: u64,
    /// Nanoseconds held, up to the report.
    pub held_ns: u64,
    /// The acquire's stack.
    pub stack: Option<u32>,
    /// Found held when the block was armed (the holder the failure
    /// attributed), not seen acquiring: held at least since `since_ns`, no
    /// stack.
    pub from_arming: bool,
    /// A pin held at least [`Tracking::long_pin`](crate::Tracking::long_pin)
    /// so far: a long pin, which keeps its page from moving (a long-term
    /// user should pin with [`pin_longterm`](crate::PageArena::pin_longterm),
    /// which moves the page out of the movable zone first).
    #[cfg_attr(feature = "serde", serde(default))]
    pub long: bool,
}

/// A recorded release.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReleaseRecord {
    /// `put` or `unpin`.
    pub kind: EventKind,
    /// The page.
    pub pfn: Pfn,
    /// The site current in the releasing thread, if any.
    pub site: Option<Owner>,
    /// The releasing thread.
    pub thread: ThreadRef,
    /// Nanoseconds since the tracker started.
    pub at_ns: u64,
    /// How long the count was held, if its acquire was recorded.
    pub held_ns: Option<u64>,
    /// For a count taken before arming: held at least this long (from the
    /// arming to the release).
    pub held_at_least_ns: Option<u64>,
    /// Refs and pins left on the block after the release; `(0, 0)` means
    /// this release freed the block.
    pub left: (u32, u32),
    /// Who took the count it dropped, if its acquire was recorded.
    pub acquired_by: Option<Owner>,
    /// The release's stack.
    pub stack: Option<u32>,
}

/// One armed (or once armed) block.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PageReport {
    /// The block's head page.
    pub pfn: Pfn,
    /// Its order now.
    pub order: u8,
    /// Why it was armed (the failed reservation's reason).
    pub reason: Option<String>,
    /// The arming.
    pub arming: u32,
    /// References on it now (while armed), or when tracking ended.
    pub count: u32,
    /// Pins on it now (while armed), or when tracking ended.
    pub pincount: u32,
    /// Whether it is armed now.
    pub armed: bool,
    /// Why it stopped being armed, if it did.
    pub disarmed: Option<DisarmCause>,
    /// The owner slot's attribution now: the latest acquirer, if it still
    /// holds its count.
    pub attributed: Option<Owner>,
    /// Holders whose acquire was recorded and not yet released.
    pub outstanding: Vec<Holder>,
    /// Refs held now with no recorded acquire (taken before arming).
    pub unrecorded_refs: u32,
    /// Pins held now with no recorded acquire (taken before arming).
    pub unrecorded_pins: u32,
    /// Releases seen, oldest first.
    pub releases: Vec<ReleaseRecord>,
    /// Events recorded on the block.
    pub events: u32,
    /// Events on its pages dropped for lack of room.
    pub dropped: u32,
}

impl PageReport {
    /// Holders now (refs plus pins; saturating, for a report read back
    /// from JSON whose counts do not fit a page's state word).
    pub fn holders(&self) -> u32 {
        self.count.saturating_add(self.pincount)
    }
}

/// Holders and events grouped by owner site, ranked: most counts held now,
/// then longest hold, then most events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SiteGroup {
    /// The site (or caller location); `None` for counts taken or dropped
    /// outside any tracked function with no location known.
    pub owner: Option<Owner>,
    /// Refs it holds now (recorded or attributed by the owner slot).
    pub refs: u32,
    /// Pins it holds now.
    pub pins: u32,
    /// Distinct blocks it holds.
    pub pages: usize,
    /// Acquires recorded.
    pub acquires: u32,
    /// Releases recorded with this site current.
    pub releases: u32,
    /// The longest hold seen, in nanoseconds: of counts it holds now (taken
    /// since arming), and of counts released with it current (for counts
    /// taken before arming, from the arming to the release).
    pub longest_hold_ns: u64,
}

/// Holders grouped by subsystem (ranked).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubsystemGroup {
    /// The subsystem (`None`: sites without one, and plain locations).
    pub subsystem: Option<String>,
    /// Refs held now.
    pub refs: u32,
    /// Pins held now.
    pub pins: u32,
    /// Sites in the group.
    pub sites: usize,
}

/// Which way a stack moved counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StackGroupKind {
    /// Stacks that took counts (get, pin, alloc).
    Acquire,
    /// Stacks that dropped counts (put, unpin).
    Release,
}

/// Events grouped by stack (`show_stacks` with a threshold).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StackGroup {
    /// Acquire or release stacks.
    pub kind: StackGroupKind,
    /// The depot handle.
    pub stack: u32,
    /// Events with this stack.
    pub count: u32,
    /// Distinct pages they touched.
    pub pages: usize,
    /// Of the acquires, how many are still outstanding.
    pub outstanding: u32,
    /// The frames, innermost first, the arena's own frames trimmed.
    pub frames: Vec<String>,
}

/// A summary of one arming.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ArmingSummary {
    /// Its number.
    pub id: u32,
    /// The reservation's reason.
    pub reason: String,
    /// The failed window.
    pub window: Range<Pfn>,
    /// When, in nanoseconds since the tracker started.
    pub at_ns: u64,
    /// Who asked.
    pub by: Option<Owner>,
    /// Blocks it armed.
    pub blocks: usize,
}

/// A recorded event, rendered (in JSON reports asked for with
/// [`ReportOptions::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EventRecord {
    /// Order recorded.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The page.
    pub pfn: Pfn,
    /// Its block head.
    pub head: Pfn,
    /// Refs before and after.
    pub refs: (u32, u32),
    /// Pins before and after.
    pub pins: (u32, u32),
    /// The thread.
    pub thread: ThreadRef,
    /// Nanoseconds since the tracker started.
    pub at_ns: u64,
    /// Acquirer or releasing site.
    pub who: Option<Owner>,
    /// Stack handle.
    pub stack: Option<u32>,
    /// The arming.
    pub arming: u32,
}

/// The owner report.
///
/// Each recorded release is paired with the acquire it closes (by the
/// acquisition's generation, which handles carry), so the report lists the
/// holders still outstanding on every armed block — with their acquire
/// stacks and how long they have held — and every release path seen. Holders
/// that took their count before the block was armed have no recorded
/// acquire; the report counts them, names the one the owner slot attributes,
/// and never guesses the rest.
///
/// Views: per block (most holders first), by site (most held now, then
/// longest hold), by subsystem, and by stack with a count threshold (the
/// kernel's `page_owner_stacks/show_stacks`). Formats: `Display` text in the
/// kernel's `pfn=0x… count=… pincount=…` style with ` => frame` lines,
/// [`to_json`](Self::to_json) (versioned by [`REPORT_VERSION`]) and
/// [`folded`](Self::folded) stacks for flamegraph tools.
///
/// ```
/// use pinowner::tracker::HoldWeight;
/// use pinowner::{ContigError, PageArena, Reason};
///
/// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
/// let frame = arena.alloc_movable(0)?;
/// let pin = frame.pin(0)?; // pinned before the failure
/// let Err(ContigError::Busy(_)) = arena.reserve_contig(32, 32, Reason::Contig) else { panic!() };
/// let reader = arena.get(frame.pfn())?; // after arming: recorded, with its stack
/// drop(reader);
/// let report = arena.owner_report();
/// let page = &report.pages[0];
/// assert_eq!((page.pfn, page.pincount, page.armed), (frame.pfn(), 1, true));
/// assert_eq!(page.releases.len(), 1, "the reader's put");
/// assert!(page.outstanding.iter().any(|h| h.from_arming), "the pinner the failure named");
/// // The sites in the way, and a flamegraph of them.
/// assert_eq!(report.by_site[0].pins, 1);
/// assert!(report.folded_holders(HoldWeight::Holds).starts_with("held;"));
/// # drop((pin, frame));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OwnerReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The reason filter, if any.
    pub reason_filter: Option<String>,
    /// The page range filter, if any.
    pub range_filter: Option<Range<Pfn>>,
    /// Nanoseconds since the tracker started, when the report was made.
    pub at_ns: u64,
    /// Armings in scope.
    pub armings: Vec<ArmingSummary>,
    /// Blocks, most holders first.
    pub pages: Vec<PageReport>,
    /// Sites, most outstanding first.
    pub by_site: Vec<SiteGroup>,
    /// Subsystems, most outstanding first.
    pub by_subsystem: Vec<SubsystemGroup>,
    /// Stacks at or above the threshold, most outstanding then most
    /// frequent first.
    pub stacks: Vec<StackGroup>,
    /// Stack groups left out by the threshold.
    pub stacks_below_threshold: usize,
    /// Events in scope.
    pub events_in_report: u64,
    /// Events recorded by the arena in all (in or out of scope).
    pub events_recorded: u64,
    /// Events dropped in all because the queue or history was full.
    pub events_dropped: u64,
    /// Arming records forgotten (oldest first, past
    /// [`MAX_ARMINGS`](super::MAX_ARMINGS)); their pages' reasons are gone.
    pub armings_dropped: u64,
    /// Distinct stacks in the depot.
    pub depot_stacks: u64,
    /// Stacks the depot could not store (bound reached).
    pub depot_failures: u64,
    /// The events themselves, if asked for.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Vec::is_empty", default))]
    pub events: Vec<EventRecord>,
}

impl OwnerReport {
    /// The top holder: the site holding the most counts now.
    pub fn top_holder(&self) -> Option<&SiteGroup> {
        self.by_site.first().filter(|s| s.refs + s.pins > 0)
    }

    /// The stack group of a handle, if it passed the threshold.
    pub fn stack(&self, handle: u32) -> Option<&StackGroup> {
        self.stacks.iter().find(|s| s.stack == handle)
    }
}

fn ns(d: core::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn thread_ref(index: u32, names: &mut HashMap<u32, Option<String>>) -> ThreadRef {
    let name = names.entry(index).or_insert_with(|| thread_name(index)).clone();
    ThreadRef { index, name }
}

/// Frames of a stack with the arena's own leading frames trimmed.
pub(crate) fn trimmed(t: &Tracker, stack: StackHandle) -> Vec<Frame> {
    let frames = t.depot.resolve(stack);
    let internal = |f: &Frame| {
        f.function.as_deref().is_some_and(|n| {
            let n = n.trim_start_matches('<');
            n.starts_with("pinowner::") || n.starts_with("core::ptr::drop_in_place") || n.starts_with("core::mem::drop")
        })
    };
    let skip = frames.iter().take_while(|f| internal(f)).count();
    let mut v: Vec<Frame> = frames.into_iter().skip(skip).collect();
    v.truncate(t.config().depth);
    v
}

impl PageArena {
    /// The owner report of everything recorded so far (kept for later
    /// reports). See [`OwnerReport`].
    ///
    /// ```
    /// use pinowner::{PageArena, Reason};
    ///
    /// let arena = PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let block = arena.alloc_movable(0)?.into_block(); // keeps its address
    /// let failure = arena.reserve_range(block.pfn(), 1, Reason::Contig).unwrap_err();
    /// let pin = block.pin(0)?; // recorded: the page is armed now
    /// let report = arena.owner_report();
    /// // The block's own reference, which the failure named, found held at
    /// // arming; then the pin, recorded.
    /// let holders = &report.pages[0].outstanding;
    /// assert_eq!(holders.len(), 2);
    /// assert!(holders[0].from_arming && !holders[1].from_arming);
    /// assert_eq!(report.pages[0].unrecorded_refs, 0);
    /// println!("{failure}\n{report}");
    /// # drop(pin);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn owner_report(&self) -> OwnerReport {
        self.owner_report_with(&ReportOptions::default())
    }

    /// The owner report with filters and a threshold.
    pub fn owner_report_with(&self, options: &ReportOptions) -> OwnerReport {
        self.build_report(options, false)
    }

    /// The owner report; the recorded history is taken (later reports start
    /// empty). Armed blocks stay armed.
    pub fn take_owner_report(&self, options: &ReportOptions) -> OwnerReport {
        self.build_report(options, true)
    }

    fn build_report(&self, o: &ReportOptions, take: bool) -> OwnerReport {
        let empty = OwnerReport {
            version: REPORT_VERSION,
            reason_filter: o.reason.map(|r| r.to_string()),
            range_filter: o.range.clone(),
            at_ns: 0,
            armings: Vec::new(),
            pages: Vec::new(),
            by_site: Vec::new(),
            by_subsystem: Vec::new(),
            stacks: Vec::new(),
            stacks_below_threshold: 0,
            events_in_report: 0,
            events_recorded: 0,
            events_dropped: 0,
            armings_dropped: 0,
            depot_stacks: 0,
            depot_failures: 0,
            events: Vec::new(),
        };
        let Some(t) = self.tracker.get() else { return empty };
        let now = t.now();
        let long_pin = ns(t.config().long_pin);
        let armings = t.armings();
        // Lookups by arming and by block, built once: the report stays
        // linear in armings, blocks and events.
        let reasons: HashMap<u32, Reason> = armings.iter().map(|a| (a.id, a.reason)).collect();
        let reason_of = |id: u32| -> Option<Reason> {
            if id == EAGER_ARMING {
                Some(Reason::Custom("eager"))
            } else {
                reasons.get(&id).copied()
            }
        };
        // When a block was first armed (a later failure may re-arm it).
        let mut first_armed_at: HashMap<Pfn, std::time::Duration> = HashMap::new();
        for a in &armings {
            for &h in &a.blocks {
                first_armed_at.entry(h).and_modify(|t| *t = (*t).min(a.at)).or_insert(a.at);
            }
        }
        let first_armed = |head: Pfn| first_armed_at.get(&head).copied();
        let in_range = |p: Pfn| o.range.as_ref().is_none_or(|r| r.contains(&p));
        let reason_ok = |id: u32| o.reason.is_none_or(|r| reason_of(id) == Some(r));
        let events: Vec<Event> =
            t.events(take).into_iter().filter(|e| in_range(e.head) && reason_ok(e.arming)).collect();
        let scoped_armings: Vec<&Arming> = armings.iter().filter(|a| o.reason.is_none_or(|r| a.reason == r)).collect();

        // Blocks in scope: armed by a scoped arming, or with events.
        let mut heads: BTreeMap<Pfn, u32> = BTreeMap::new();
        for a in &scoped_armings {
            for &h in &a.blocks {
                if in_range(h) {
                    heads.insert(h, a.id);
                }
            }
        }
        // And blocks with counts recorded and still held (their history may
        // have been taken by an earlier report).
        for h in t.holds.lock().heads() {
            let arming = t.arming_of(h);
            if in_range(h as Pfn) && reason_ok(arming) {
                heads.entry(h as Pfn).or_insert(arming);
            }
        }
        let mut by_head: BTreeMap<Pfn, Vec<&Event>> = BTreeMap::new();
        for e in &events {
            heads.entry(e.head).or_insert(e.arming);
            by_head.entry(e.head).or_default().push(e);
        }

        let mut names = HashMap::new();
        let mut sites: HashMap<Option<Owner>, SiteGroup> = HashMap::new();
        let mut site_pages: HashMap<Option<Owner>, std::collections::BTreeSet<Pfn>> = HashMap::new();
        // (kind, stack) -> (count, pages, outstanding)
        let mut stacks: HashMap<(StackGroupKind, StackHandle), (u32, std::collections::BTreeSet<Pfn>, u32)> =
            HashMap::new();

        let mut pages = Vec::new();
        for (&head, &arming) in &heads {
            let evs = by_head.remove(&head).unwrap_or_default();
            // Only while `head` still heads a block: merged into a larger one
            // since, its page's info describes that other block.
            let info = self.page_info(head).ok().filter(|i| i.head == head);
            let armed = info.is_some_and(|i| i.state.flags.contains(crate::PageFlags::TRACKED));
            // Armed: the counts now. No longer armed: the counts when
            // tracking ended (the last event's), not a later owner's.
            let (count, pincount, order) = match (armed, evs.last()) {
                (false, Some(last)) => (last.refs.1, last.pins.1, last.order),
                _ => info.map_or((0, 0, 0), |i| (i.state.refcount, i.state.pincount, i.state.order)),
            };
            // The owner slot speaks for the block only while it is armed.
            let info = info.filter(|_| armed);
            // The counts recorded on the block and still held: from the
            // holds table, exact whatever the history dropped.
            let live = t.holds.lock().of(head as u32);
            let mut releases = Vec::new();
            let mut disarmed = None;
            for e in &evs {
                if e.kind.is_acquire() {
                    if let Some(s) = e.stack {
                        let g = stacks.entry((StackGroupKind::Acquire, s)).or_default();
                        g.0 += 1;
                        g.1.insert(e.pfn);
                    }
                    if !e.from_arming {
                        let owner = e.who.map(Owner::of);
                        site_group(&mut sites, &owner).acquires += 1;
                    }
                } else if e.kind.is_release() {
                    if let Some(s) = e.stack {
                        let g = stacks.entry((StackGroupKind::Release, s)).or_default();
                        g.0 += 1;
                        g.1.insert(e.pfn);
                    }
                    let site = e.who.map(Owner::of);
                    // Paired when it happened (see `Event::acquired`).
                    let (held_ns, held_at_least_ns) = match e.acquired {
                        Some(a) if !a.from_arming => (Some(ns(e.at.saturating_sub(a.at))), None),
                        Some(a) => (None, Some(ns(e.at.saturating_sub(a.at)))),
                        None => (None, first_armed(head).map(|a| ns(e.at.saturating_sub(a)))),
                    };
                    let g = site_group(&mut sites, &site);
                    g.releases += 1;
                    g.longest_hold_ns = g.longest_hold_ns.max(held_ns.or(held_at_least_ns).unwrap_or(0));
                    releases.push(ReleaseRecord {
                        kind: e.kind,
                        pfn: e.pfn,
                        site,
                        thread: thread_ref(e.thread, &mut names),
                        at_ns: ns(e.at),
                        held_ns,
                        held_at_least_ns,
                        left: (e.refs.1, e.pins.1),
                        acquired_by: e.acquired.and_then(|a| a.who.map(Owner::of)),
                        stack: e.stack.map(|s| s.get()),
                    });
                } else if let EventKind::Disarm(cause) = e.kind {
                    disarmed = Some(cause);
                } else if e.kind == EventKind::Arm {
                    disarmed = None;
                }
            }
            if armed {
                disarmed = None;
            }
            let recorded_refs = live.iter().filter(|x| !x.kind.is_pin()).count() as u32;
            let recorded_pins = live.iter().filter(|x| x.kind.is_pin()).count() as u32;
            let unrecorded_refs = count.saturating_sub(recorded_refs);
            let unrecorded_pins = pincount.saturating_sub(recorded_pins);
            // The block's latest claiming acquirer, if it still holds (the
            // head's slot), with the generation its acquisition produced
            // and whether it took a pin.
            let hold = info.and_then(|_| {
                let w = self.desc(head as u32).state.load(crate::sync::Ordering::Acquire);
                self.latest_hold(head as u32, w).map(|(a, pin)| (a, crate::page::state::gen(w), pin))
            });
            let attributed = hold.map(|(a, _, _)| a);
            // The slot names one holder; when that holder's acquire is
            // among the recorded ones (same generation), it is listed
            // already.
            let attributed_is_recorded = hold.is_some_and(|(_, gen, _)| live.iter().any(|x| x.gen == Some(gen)));
            let mut holders = Vec::new();
            for e in &live {
                let owner = e.who.map(Owner::of);
                let held = ns(now.saturating_sub(e.at));
                let g = site_group(&mut sites, &owner);
                if e.kind.is_pin() {
                    g.pins += 1;
                } else {
                    g.refs += 1;
                }
                g.longest_hold_ns = g.longest_hold_ns.max(held);
                site_pages.entry(owner.clone()).or_default().insert(head);
                if let Some(s) = e.stack {
                    stacks.entry((StackGroupKind::Acquire, s)).or_default().2 += 1;
                }
                holders.push(Holder {
                    kind: e.kind,
                    pfn: e.pfn,
                    owner,
                    thread: thread_ref(e.thread, &mut names),
                    since_ns: ns(e.at),
                    held_ns: held,
                    stack: e.stack.map(|s| s.get()),
                    from_arming: e.from_arming,
                    long: e.kind.is_pin() && held >= long_pin,
                });
            }
            if let (Some((a, _, pin)), false) = (hold, attributed_is_recorded) {
                // A holder from before arming: credited with the one count
                // its acquisition took, of its kind; the rest stays
                // unattributed.
                if (pin && unrecorded_pins > 0) || (!pin && unrecorded_refs > 0) {
                    let owner = Some(Owner::of(a));
                    let g = site_group(&mut sites, &owner);
                    if pin {
                        g.pins += 1;
                    } else {
                        g.refs += 1;
                    }
                    site_pages.entry(owner).or_default().insert(head);
                }
            }
            let dropped = (head..head + (1usize << order)).map(|p| t.page_drops(p as u32)).sum();
            pages.push(PageReport {
                pfn: head,
                order,
                reason: reason_of(arming).map(|r| r.to_string()),
                arming,
                count,
                pincount,
                armed,
                disarmed,
                attributed: attributed.map(Owner::of),
                outstanding: holders,
                unrecorded_refs,
                unrecorded_pins,
                releases,
                events: evs.len() as u32,
                dropped,
            });
        }
        pages.sort_by(|a, b| b.holders().cmp(&a.holders()).then(a.pfn.cmp(&b.pfn)));

        let mut by_site: Vec<SiteGroup> = sites
            .into_iter()
            .map(|(k, mut g)| {
                g.pages = site_pages.get(&k).map_or(0, |s| s.len());
                g
            })
            .collect();
        by_site.sort_by(|a, b| {
            (b.pins + b.refs, b.longest_hold_ns, b.acquires + b.releases)
                .cmp(&(a.pins + a.refs, a.longest_hold_ns, a.acquires + a.releases))
                .then_with(|| a.owner.cmp(&b.owner))
        });
        let mut subs: BTreeMap<Option<String>, SubsystemGroup> = BTreeMap::new();
        for s in &by_site {
            let key = s.owner.as_ref().and_then(|o| o.subsystem.clone());
            let g = subs.entry(key.clone()).or_insert(SubsystemGroup { subsystem: key, refs: 0, pins: 0, sites: 0 });
            g.refs += s.refs;
            g.pins += s.pins;
            g.sites += 1;
        }
        let mut by_subsystem: Vec<SubsystemGroup> = subs.into_values().collect();
        by_subsystem.sort_by_key(|s| core::cmp::Reverse((s.pins + s.refs, s.pins)));

        let mut stack_groups = Vec::new();
        let mut below = 0;
        for ((kind, handle), (count, pages_touched, outstanding)) in stacks {
            if (count as usize) < o.threshold.max(1) {
                below += 1;
                continue;
            }
            let mut frames = if o.frames == 0 {
                Vec::new() // nothing to show: symbols are not even resolved
            } else if handle.is_failed() {
                vec!["(stack not stored: depot full)".to_owned()]
            } else {
                trimmed(t, handle).iter().map(|f| f.to_string()).collect()
            };
            frames.truncate(o.frames);
            stack_groups.push(StackGroup {
                kind,
                stack: handle.get(),
                count,
                pages: pages_touched.len(),
                outstanding,
                frames,
            });
        }
        stack_groups
            .sort_by(|a, b| (b.outstanding, b.count, a.kind, a.stack).cmp(&(a.outstanding, a.count, b.kind, b.stack)));

        let stats = t.stats();
        let event_records = if o.events {
            events
                .iter()
                .map(|e| EventRecord {
                    seq: e.seq,
                    kind: e.kind,
                    pfn: e.pfn,
                    head: e.head,
                    refs: e.refs,
                    pins: e.pins,
                    thread: thread_ref(e.thread, &mut names),
                    at_ns: ns(e.at),
                    who: e.who.map(Owner::of),
                    stack: e.stack.map(|s| s.get()),
                    arming: e.arming,
                })
                .collect()
        } else {
            Vec::new()
        };
        OwnerReport {
            at_ns: ns(now),
            armings: scoped_armings
                .iter()
                .map(|a| ArmingSummary {
                    id: a.id,
                    reason: a.reason.to_string(),
                    window: a.window.clone(),
                    at_ns: ns(a.at),
                    by: a.by.map(Owner::of),
                    blocks: a.blocks.len(),
                })
                .collect(),
            pages,
            by_site,
            by_subsystem,
            stacks: stack_groups,
            stacks_below_threshold: below,
            events_in_report: events.len() as u64,
            events_recorded: stats.recorded,
            events_dropped: stats.dropped,
            armings_dropped: stats.armings_dropped,
            depot_stacks: stats.depot.unique_stacks,
            depot_failures: stats.depot.failures,
            events: event_records,
            ..empty
        }
    }
}

/// The site group of `owner`, created empty on first use.
fn site_group<'a>(sites: &'a mut HashMap<Option<Owner>, SiteGroup>, owner: &Option<Owner>) -> &'a mut SiteGroup {
    sites.entry(owner.clone()).or_insert_with(|| SiteGroup {
        owner: owner.clone(),
        refs: 0,
        pins: 0,
        pages: 0,
        acquires: 0,
        releases: 0,
        longest_hold_ns: 0,
    })
}
