//! The functions behind the `pinowner-report` tool, which renders a JSON
//! report written by `pinowner` (any `to_json` output: an owner report, a
//! reservation failure, an audit, fragmentation or tracker statistics, the
//! arena's counters, an arena map) for an operator:
//!
//! - [`render_text`]: the report as text, whatever its kind;
//! - [`render_map`]: an SVG map, from an arena map (the whole arena) or a
//!   reservation failure (its window: busy blocks and free pages);
//! - [`render_flame`]: a flamegraph SVG of an owner report's holders in the
//!   way (`OwnerReport::folded_holders`), or of its busy paths, drawn by
//!   `inferno`.
//!
//! [`run`] parses the command line and writes the result.

use std::fmt::Write as _;
use std::io::Write;

use pinowner::svg::ArenaMap;
use pinowner::tracker::{HoldWeight, Owner, OwnerReport, TrackerStats};
use pinowner::{FragStats, PageClass, ReportJsonError, Stats, ZoneKind};
use serde_json::Value;

/// The command line's help.
pub const USAGE: &str = "\
usage: pinowner-report COMMAND REPORT.json [-o OUT]

commands:
  text   REPORT.json          the report as text (any kind)
  map    REPORT.json [-o OUT] an SVG map: from an arena_map (the whole arena)
                              or a contig_failure (its window)
  flame  REPORT.json [-o OUT] [--time] [--paths]
                              a flamegraph SVG of an owner_report's holders in
                              the way, one per hold (--time: by time held;
                              --paths: every recorded path, by events)

REPORT.json is any pinowner `to_json` output; `-` reads standard input.
Output goes to OUT, or to standard output.";

/// Why the tool could not render a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line does not parse.
    #[error("{0}")]
    Usage(String),
    /// Reading the report or writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The report is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A report `pinowner` could not read back.
    #[error(transparent)]
    Report(#[from] ReportJsonError),
    /// The report has no `"kind"`, or one this tool does not know.
    #[error("unknown report kind {0:?}")]
    UnknownKind(String),
    /// The command does not apply to this kind of report.
    #[error("{command} needs {needs}, and this is a {kind} report")]
    WrongKind {
        /// The command.
        command: &'static str,
        /// The kinds it takes.
        needs: &'static str,
        /// The report's kind.
        kind: String,
    },
    /// A field the report's kind always has is missing or mistyped.
    #[error("a {kind} report without a readable {field:?}")]
    Field {
        /// The report's kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The owner report has nothing to draw.
    #[error("the owner report has no {0} to draw")]
    Empty(&'static str),
}

/// The report's `"kind"`, and the report parsed.
fn kind_of(json: &str) -> Result<(String, Value), CliError> {
    let v: Value = serde_json::from_str(json)?;
    let kind = v.get("kind").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| "(none)".to_owned());
    Ok((kind, v))
}

/// An `Owner` object (or `null`) as text.
fn owner(v: &Value) -> String {
    match serde_json::from_value::<Option<Owner>>(v.clone()) {
        Ok(Some(o)) => o.to_string(),
        _ => "(unattributed)".to_owned(),
    }
}

fn range(v: &Value) -> Option<core::ops::Range<usize>> {
    Some(v.get("start")?.as_u64()? as usize..v.get("end")?.as_u64()? as usize)
}

fn num(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// The `by_acquirer` ranking of a failure or an audit.
fn acquirer_ranking(out: &mut String, v: &Value) {
    let groups = v.get("by_acquirer").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(out, "  in the way, by acquirer:");
    for (i, g) in groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {}. {}: {} blocks, {} refs, {} pins",
            i + 1,
            owner(&g["acquirer"]),
            num(g, "blocks"),
            num(g, "refs"),
            num(g, "pins")
        );
    }
}

fn failure_text(v: &Value) -> Result<String, CliError> {
    let window = range(&v["window"]).ok_or(CliError::Field { kind: "contig_failure", field: "window" })?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reservation failed: reason={} window={:#x}..{:#x}",
        v["reason"].as_str().unwrap_or("?"),
        window.start,
        window.end
    );
    for b in v["busy"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = writeln!(
            out,
            "  pfn={:#x} order={} count={} pincount={} zone={} flags={} owner={}",
            num(b, "head"),
            num(b, "order"),
            num(b, "refcount"),
            num(b, "pincount"),
            b["zone"].as_str().unwrap_or("?"),
            b["flags"].as_str().unwrap_or("?"),
            owner(&b["attributed"])
        );
    }
    acquirer_ranking(&mut out, v);
    if let Some(w) = v.get("waited").filter(|w| !w.is_null()) {
        let _ = writeln!(
            out,
            "  waited {:.3}s: {} attempts, {} releases of armed blocks, {} events recorded",
            num(w, "waited_ns") as f64 / 1e9,
            num(w, "attempts"),
            num(w, "releases"),
            num(w, "events")
        );
    }
    let _ = write!(
        out,
        "{} busy pages in {} blocks; {} holders ({} pins), {} attributed; {} windows considered",
        num(v, "busy_pages"),
        v["busy"].as_array().map_or(0, Vec::len),
        num(v, "holders"),
        num(v, "pins"),
        num(v, "attributed"),
        num(v, "windows_considered")
    );
    Ok(out)
}

fn audit_text(v: &Value) -> String {
    let blocks = v["blocks"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = format!("audit: {} blocks held\n", blocks.len());
    for b in blocks {
        let _ = writeln!(
            out,
            "  pfn={:#x} order={} zone={} refs={} pins={}{} latest={}",
            num(b, "head"),
            num(b, "order"),
            b["zone"].as_str().unwrap_or("?"),
            num(b, "refs"),
            num(b, "pins"),
            if b["contig"].as_bool() == Some(true) { " contig" } else { "" },
            owner(&b["latest"])
        );
    }
    acquirer_ranking(&mut out, v);
    out.truncate(out.trim_end().len());
    out
}

fn tracker_text(s: &TrackerStats) -> String {
    format!(
        "tracker: {} blocks armed now, {} armings ({} forgotten)\n\
         events: {} recorded, {} dropped\n\
         holds: {} outstanding, {} untracked (holds table full)\n\
         depot: {} stacks, {} bytes, {} hits, {} not stored\n\
         callback panics contained: {}",
        s.armed_blocks,
        s.armings,
        s.armings_dropped,
        s.recorded,
        s.dropped,
        s.holds,
        s.holds_untracked,
        s.depot.unique_stacks,
        s.depot.bytes,
        s.depot.hits,
        s.depot.failures,
        s.callback_panics
    )
}

/// Per-order counts as `order:count` pairs, the orders with a count only.
fn per_order(counts: &[u64]) -> String {
    let pairs: Vec<String> =
        counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(o, n)| format!("{o}:{n}")).collect();
    if pairs.is_empty() {
        "none".to_owned()
    } else {
        pairs.join(" ")
    }
}

fn stats_text(s: &Stats) -> String {
    let mut out = String::from("arena stats:\n");
    for z in &s.zones {
        let _ = writeln!(
            out,
            "  zone {}: {} allocs, {} frees, {} failures, {} live blocks",
            z.zone,
            z.total_allocs(),
            z.total_frees(),
            z.total_failures(),
            z.live_blocks()
        );
        let _ = writeln!(out, "    allocs by order: {}", per_order(&z.allocs));
        let _ = writeln!(out, "    frees by order: {}", per_order(&z.frees));
        let _ = writeln!(out, "    failures by order: {}", per_order(&z.failures));
    }
    let r = &s.reservations;
    let _ = writeln!(
        out,
        "  reservations: {} tried, {} succeeded, {} busy, {} refused, {} retried, {} pages reserved, {} report waits",
        r.tried, r.succeeded, r.busy, r.refused, r.retried, r.pages_reserved, r.report_waits
    );
    for line in tracker_text(&s.tracker).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out.truncate(out.trim_end().len());
    out
}

fn map_text(m: &ArenaMap) -> String {
    let c = m.counts();
    let mut out = format!(
        "arena map: pages {:#x}..{:#x}; free {}, used {}, pinned {}, contig {}, armed {}\n",
        m.pages.start, m.pages.end, c.free, c.used, c.pinned, c.contig, c.armed
    );
    for z in &m.zones {
        let _ = writeln!(out, "  zone {} {:#x}..{:#x}", z.kind, z.pages.start, z.pages.end);
    }
    if let Some(w) = &m.window {
        let _ = writeln!(out, "  failed window {:#x}..{:#x}", w.start, w.end);
    }
    for r in m.runs.iter().filter(|r| r.class != PageClass::Free || r.armed) {
        let _ = writeln!(
            out,
            "  {:#x}..{:#x} {}{}",
            r.pages.start,
            r.pages.end,
            r.class.name(),
            if r.armed { " armed" } else { "" }
        );
    }
    out.truncate(out.trim_end().len());
    out
}

/// The report as text, whatever its kind: the owner report and the
/// fragmentation statistics as `pinowner` prints them, the others line by
/// line.
///
/// # Errors
///
/// [`CliError`] if the text is not a report this tool knows.
pub fn render_text(json: &str) -> Result<String, CliError> {
    let (kind, v) = kind_of(json)?;
    Ok(match kind.as_str() {
        "owner_report" => OwnerReport::from_json(json)?.to_string(),
        "frag_stats" => FragStats::from_json(json)?.to_string(),
        "tracker_stats" => tracker_text(&TrackerStats::from_json(json)?),
        "stats" => stats_text(&Stats::from_json(json)?),
        "arena_map" => map_text(&ArenaMap::from_json(json)?),
        "contig_failure" => failure_text(&v)?,
        "audit" => audit_text(&v),
        _ => return Err(CliError::UnknownKind(kind)),
    })
}

/// A failure's window as a map: its busy blocks (pinned or used, armed by
/// the failure) and the rest free, as `ArenaMap::from_failure` draws it.
fn failure_map(v: &Value) -> Result<ArenaMap, CliError> {
    let field = |field| CliError::Field { kind: "contig_failure", field };
    let window = range(&v["window"]).ok_or(field("window"))?;
    let busy = v["busy"].as_array().ok_or(field("busy"))?;
    let zone = match busy.first().and_then(|b| b["zone"].as_str()) {
        Some("normal") => ZoneKind::Normal,
        _ => ZoneKind::Movable,
    };
    let busy = busy
        .iter()
        .map(|b| {
            let pages = range(&b["pages_in_window"]).ok_or(field("busy"))?;
            Ok((pages, if num(b, "pincount") > 0 { PageClass::Pinned } else { PageClass::Used }))
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    Ok(ArenaMap::of_window(window, zone, 0, busy))
}

/// An SVG map: the whole arena from an `arena_map` report, or a
/// `contig_failure`'s window.
///
/// # Errors
///
/// [`CliError::WrongKind`] for other reports; [`CliError`] if the report
/// cannot be read.
pub fn render_map(json: &str) -> Result<String, CliError> {
    let (kind, v) = kind_of(json)?;
    match kind.as_str() {
        "arena_map" => Ok(ArenaMap::from_json(json)?.to_svg()),
        "contig_failure" => Ok(failure_map(&v)?.to_svg()),
        _ => Err(CliError::WrongKind { command: "map", needs: "an arena_map or a contig_failure", kind }),
    }
}

/// What [`render_flame`] draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flame {
    /// The holders in the way, weighed by `HoldWeight`.
    Holders(HoldWeight),
    /// Every recorded path (acquire and release stacks), by events.
    Paths,
}

/// A flamegraph SVG of an owner report, drawn by `inferno`.
///
/// # Errors
///
/// [`CliError::WrongKind`] for other reports, [`CliError::Empty`] when
/// there is nothing to draw (no outstanding holder, or no recorded path).
pub fn render_flame(json: &str, what: Flame) -> Result<String, CliError> {
    let (kind, _) = kind_of(json)?;
    if kind != "owner_report" {
        return Err(CliError::WrongKind { command: "flame", needs: "an owner_report", kind });
    }
    let report = OwnerReport::from_json(json)?;
    let (folded, title, count_name, empty) = match what {
        Flame::Holders(w) => (
            report.folded_holders(w),
            "holders in the way",
            if w == HoldWeight::Holds { "holds" } else { "µs held" },
            "outstanding holders",
        ),
        Flame::Paths => (report.folded(), "recorded paths", "events", "recorded paths"),
    };
    if folded.trim().is_empty() {
        return Err(CliError::Empty(empty));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = format!("pinowner: {title}");
    options.count_name = count_name.to_owned();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .map_err(|source| CliError::Io { path: "(flamegraph)".to_owned(), source })?;
    Ok(String::from_utf8(svg).expect("inferno writes UTF-8"))
}

/// Runs the tool: `args` without the program name; the result goes to
/// `stdout` unless `-o` names a file.
///
/// # Errors
///
/// [`CliError::Usage`] for a command line that does not parse (`-h` or
/// `--help` print the usage and succeed); the others as for the render
/// functions.
pub fn run(args: &[String], stdout: &mut dyn Write) -> Result<(), CliError> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return writeln!(stdout, "{USAGE}").map_err(|source| CliError::Io { path: "(stdout)".to_owned(), source });
    }
    let mut command = None;
    let mut input = None;
    let mut output = None;
    let mut time = false;
    let mut paths = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => {
                output = Some(it.next().ok_or_else(|| CliError::Usage(format!("{a} needs a file name")))?.clone())
            }
            "--time" => time = true,
            "--paths" => paths = true,
            s if s.starts_with('-') && s != "-" => return Err(CliError::Usage(format!("unknown option {s:?}"))),
            s if command.is_none() => command = Some(s.to_owned()),
            s if input.is_none() => input = Some(s.to_owned()),
            s => return Err(CliError::Usage(format!("unexpected argument {s:?}"))),
        }
    }
    let command = command.ok_or_else(|| CliError::Usage("no command given".to_owned()))?;
    if !matches!(command.as_str(), "text" | "map" | "flame") {
        return Err(CliError::Usage(format!("unknown command {command:?}")));
    }
    let input = input.ok_or_else(|| CliError::Usage(format!("{command} needs a report file (or - for stdin)")))?;
    if (time || paths) && command != "flame" {
        return Err(CliError::Usage("--time and --paths are options of flame".to_owned()));
    }
    let json = if input == "-" { std::io::read_to_string(std::io::stdin()) } else { std::fs::read_to_string(&input) }
        .map_err(|source| CliError::Io { path: input.clone(), source })?;
    let mut rendered = match command.as_str() {
        "text" => render_text(&json)?,
        "map" => render_map(&json)?,
        "flame" => {
            let what = match (paths, time) {
                (true, _) => Flame::Paths,
                (false, true) => Flame::Holders(HoldWeight::HeldMicros),
                (false, false) => Flame::Holders(HoldWeight::Holds),
            };
            render_flame(&json, what)?
        }
        _ => unreachable!("checked above"),
    };
    if !rendered.ends_with('\n') {
        rendered.push('\n');
    }
    match output {
        Some(path) => std::fs::write(&path, rendered).map_err(|source| CliError::Io { path, source }),
        None => {
            stdout.write_all(rendered.as_bytes()).map_err(|source| CliError::Io { path: "(stdout)".to_owned(), source })
        }
    }
}
