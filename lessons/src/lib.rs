//! Protocol lessons (`cargo run -- lesson [NAME]`, docs/lessons.md): each breaks one
//! rule of the CBD protocol on purpose — through the test-only switches
//! `device::backend::Sabotage` and `host::engine::HostSabotage` — runs a short scenario
//! with both engines natively on the adversarial non-coherent memory, shows the
//! protocol trace around the failure and the verdict in plain words (for the
//! consistency-model lessons: the history checker's counter-example), then runs the
//! same scenario with the rule kept and shows it pass.
//!
//! A lesson is one entry of the table in `table.rs`; its [`Kind`] says which harness
//! runs it: [`adversarial`] (a seeded schedule, the harness of host/tests/adversary.rs),
//! [`recorded`] (a recorded history checked by `history::check`, the harness of
//! host/tests/histories.rs), or the deterministic corrupted completion ([`corrupt`]).

pub mod adversarial;
pub mod corrupt;
mod model;
pub mod recorded;
mod setup;
mod table;
pub mod trace;

pub use adversarial::Faults;
pub use table::all;

use device::trace::TraceEvent;
use history::{CheckError, Rule};
use std::collections::HashSet;
use std::fmt::Write as _;
use trace::{Entry, RegionMap, TraceLog};

/// Where a lesson comes from: one of the project's seeds (review comments, RFCs,
/// surveys). They live outside the repository; the docs call them by `name`.
#[derive(Clone, Copy, Debug)]
pub struct Source {
    /// The stable name the docs use, e.g. "the Gregory Price seed".
    pub name: &'static str,
    /// The seed's file name.
    pub file: &'static str,
    /// One line of it, verbatim.
    pub quote: &'static str,
    /// A translation or context for the quote, if it needs one.
    pub gloss: &'static str,
}

/// Which harness runs a lesson, and how its broken run must fail.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A seeded schedule on the adversarial memory; the broken run is caught when its
    /// first failure contains one of `catch`.
    Adversarial {
        scenario: adversarial::Scenario,
        faults: Faults,
        catch: &'static [&'static str],
    },
    /// A recorded history checked against the consistency model; the broken device is
    /// caught when the checker rejects the history naming `rule`.
    Recorded {
        scenario: recorded::Scenario,
        sabotage: device::backend::Sabotage,
        rule: Rule,
    },
    /// The corrupted completion (deterministic; no seed).
    CorruptedCe,
}

/// One lesson.
#[derive(Clone, Debug)]
pub struct Lesson {
    /// What `cargo run -- lesson NAME` takes.
    pub name: &'static str,
    /// One line, for the list.
    pub title: &'static str,
    /// The rule, in a sentence or two.
    pub rule: &'static str,
    /// The switch that removes it and what the broken engine then does.
    pub broken: &'static str,
    /// What goes wrong, in plain words (printed with the failure).
    pub verdict: &'static str,
    /// What to look at in the trace.
    pub look: &'static str,
    /// The docs that explain the rule.
    pub docs: &'static str,
    /// The test of the suite that checks the same thing at scale.
    pub test: &'static str,
    pub source: Source,
    /// The first seed tried (scenario seeds; `--seed` overrides it).
    pub seed: u64,
    pub kind: Kind,
}

/// How to run a lesson.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The first seed to try (default: the lesson's own).
    pub seed: Option<u64>,
    /// Seeds tried, from the first, until the broken run fails as the lesson says.
    pub tries: u64,
    /// Trace lines shown before the failure (0: none).
    pub context: usize,
    /// Only the verdicts (no rule, source or trace).
    pub quiet: bool,
    /// Every trace line, record upkeep (record writes, heartbeats) included.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: None,
            tries: 20,
            context: 40,
            quiet: false,
            verbose: false,
        }
    }
}

/// How a lesson went.
#[derive(Clone, Debug)]
pub struct Report {
    /// The text printed.
    pub text: String,
    /// The seed the broken run failed with (and the fixed run passed with).
    pub seed: Option<u64>,
    /// The broken run's failure, as it was caught.
    pub broken: Option<String>,
    /// The fixed run: Ok(summary) or Err(what went wrong).
    pub fixed: Result<String, String>,
}

impl Report {
    /// The lesson ran as designed: the broken run failed as the lesson says and the
    /// fixed run passed.
    pub fn as_designed(&self) -> bool {
        self.broken.is_some() && self.fixed.is_ok()
    }
}

/// The lesson called `name`.
pub fn find(name: &str) -> Option<Lesson> {
    all().into_iter().find(|l| l.name == name)
}

/// The names, comma-separated (for errors).
pub fn names() -> String {
    all().iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
}

/// The list `cargo run -- lesson` prints.
pub fn list_text() -> String {
    let all = all();
    let w = all.iter().map(|l| l.name.len()).max().unwrap_or(0);
    let mut s = String::from("Lessons (cargo run -- lesson NAME; docs/lessons.md):\n");
    for l in &all {
        let _ = writeln!(s, "  {:<w$}  {}", l.name, l.title);
    }
    s
}

/// The error for an unknown name.
pub fn unknown(name: &str) -> String {
    format!("no lesson called {name:?}; the lessons are: {}", names())
}

/// Write `prefix` and `text` wrapped at 92 columns, with `indent` on every line after
/// the first.
fn para(t: &mut String, prefix: &str, text: &str, indent: &str) {
    let _ = writeln!(t, "{prefix}{}", wrap(text, prefix.chars().count(), indent));
}

fn wrap(text: &str, first: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = first;
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && col + 1 + word.chars().count() > 92 {
            out.push('\n');
            out.push_str(indent);
            col = indent.len();
        } else if !empty {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.chars().count();
        empty = false;
    }
    out
}

/// Run a lesson: the broken version (seeds from the first until it fails as the lesson
/// says, at most `tries`), then the fixed version with the same seed.
pub fn run(l: &Lesson, o: &Options) -> Report {
    let mut t = String::new();
    let pad = "           ";
    let _ = writeln!(t, "lesson {}: {}", l.name, l.title);
    if !o.quiet {
        let _ = writeln!(t);
        para(&mut t, "  rule     ", l.rule, pad);
        para(&mut t, "  docs     ", l.docs, pad);
        let src = format!(
            "{} ({}): \"{}\"",
            l.source.name, l.source.file, l.source.quote
        );
        para(&mut t, "  source   ", &src, pad);
        if !l.source.gloss.is_empty() {
            para(&mut t, pad, &format!("({})", l.source.gloss), pad);
        }
        para(&mut t, "  tested   ", l.test, pad);
    }
    let _ = writeln!(t);
    para(&mut t, "1. BROKEN  ", l.broken, pad);
    let first = o.seed.unwrap_or(l.seed);
    let (seed, broken) = match &l.kind {
        Kind::CorruptedCe => (None, broken_corrupt(&mut t, o)),
        Kind::Adversarial {
            scenario,
            faults,
            catch,
        } => broken_adversarial(&mut t, o, first, scenario, *faults, catch),
        Kind::Recorded {
            scenario,
            sabotage,
            rule,
        } => broken_recorded(&mut t, o, first, scenario, *sabotage, *rule),
    };
    if broken.is_some() {
        if !o.quiet && o.context > 0 {
            para(&mut t, "   look at: ", l.look, "   ");
        }
        para(&mut t, "   in plain words: ", l.verdict, "   ");
    }
    let _ = writeln!(t);
    let how = match (&l.kind, seed) {
        (Kind::CorruptedCe, _) => "the same WRITE and the same flipped bit, on a transport with \
                                   entry CRCs (24-byte CEs, non-coherent mode)"
            .to_string(),
        (_, Some(s)) => format!("the same scenario (seed {s}) with the rule kept"),
        (_, None) => "the same scenario with the rule kept".into(),
    };
    para(&mut t, "2. FIXED   ", &how, pad);
    let fixed = match (&l.kind, seed) {
        (Kind::CorruptedCe, _) => match corrupt::run(true, &TraceLog::new(16)) {
            corrupt::Verdict::Refused(s) => Ok(s),
            corrupt::Verdict::Accepted(s) | corrupt::Verdict::Harness(s) => Err(s),
        },
        (_, None) => Err("not run: the broken run never failed as the lesson says".into()),
        (Kind::Adversarial { scenario, .. }, Some(s)) => {
            let r = adversarial::run(scenario, Faults::default(), s, &TraceLog::new(16));
            match r.failure {
                None => Ok(format!(
                    "{} requests completed ({} writes, {} reads, {} flush(es)), every READ returned \
                     what was written, the media equals the model disk, the memory saw no \
                     violation ({} write-backs, {} early evictions, {} stale reads the \
                     protocol re-read past)",
                    r.submitted,
                    r.counts.writes,
                    r.counts.reads,
                    r.counts.flushes,
                    r.stats.write_backs,
                    r.stats.early_write_backs,
                    r.stats.stale_reads
                )),
                Some(f) => Err(f),
            }
        }
        (Kind::Recorded { scenario, .. }, Some(s)) => {
            match recorded::run(
                scenario,
                device::backend::Sabotage::NONE,
                s,
                &TraceLog::new(16),
            ) {
                Err(e) => Err(e),
                Ok(run) => match history::check(&run.history) {
                    Ok(sum) => Ok(format!("the checker accepts the history: {sum}")),
                    Err(e) => Err(format!("the checker rejects the history: {e}")),
                },
            }
        }
    };
    match &fixed {
        Ok(s) => {
            para(&mut t, "   PASSED: ", s, "   ");
        }
        Err(e) => {
            para(&mut t, "   FAILED: ", e, "   ");
        }
    }
    let _ = writeln!(t);
    let report = Report {
        text: String::new(),
        seed,
        broken,
        fixed,
    };
    let _ = writeln!(
        t,
        "{}",
        if report.as_designed() {
            format!(
                "lesson {} ran as designed: the broken run failed, the fixed run passed.",
                l.name
            )
        } else {
            format!(
                "lesson {} did NOT run as designed (broken run {}, fixed run {}).",
                l.name,
                if report.broken.is_some() {
                    "failed"
                } else {
                    "not caught"
                },
                if report.fixed.is_ok() {
                    "passed"
                } else {
                    "failed"
                }
            )
        }
    );
    Report { text: t, ..report }
}

fn trace_block(t: &mut String, o: &Options, log: &TraceLog, map: &RegionMap) {
    if o.quiet || o.context == 0 {
        return;
    }
    let lines = trace::without_housekeeping(log.tail(o.context * 60), map, o.verbose);
    let lines = trace::render(&lines, map, o.context);
    let _ = writeln!(
        t,
        "   the protocol trace up to the failure (last {} lines{}; # = event number):",
        lines.len(),
        if o.verbose {
            ""
        } else {
            ", record upkeep hidden"
        }
    );
    for l in lines {
        let _ = writeln!(t, " {l}");
    }
}

/// The lines of one request (its entries on both sides, the rejections at its SE's
/// ring position, the harness's notes about it).
fn request_story(t: &mut String, o: &Options, log: &TraceLog, map: &RegionMap, req: (u32, u64)) {
    if o.quiet || o.context == 0 {
        return;
    }
    let story = log.story();
    let keep = request_lines(&story, req);
    let lines: Vec<trace::Line> = story
        .into_iter()
        .filter(|l| keep.contains(&l.seq))
        .collect();
    let lines = trace::render(&lines, map, o.context);
    let _ = writeln!(
        t,
        "   the lines of tid {} on q{} (its entries, its execution, rejections at its slot):",
        trace::tid(req.1),
        req.0
    );
    for l in lines {
        let _ = writeln!(t, " {l}");
    }
}

/// The lines of `story` about one request (queue, req_tid): its entries on both sides,
/// the device's execution of it (payload copies, media ops, rejections between reading
/// its SE and posting its CE), rejections at its SE's slot, the harness's notes.
fn request_lines(story: &[trace::Line], req: (u32, u64)) -> HashSet<u64> {
    let mut se_pos = HashSet::new();
    let (mut seen, mut posted) = (None, None);
    for l in story {
        match l.entry {
            Entry::Proto(TraceEvent::SePosted {
                chan, pos, req_tid, ..
            }) if (chan, req_tid) == req => {
                se_pos.insert((chan, pos));
            }
            Entry::Proto(TraceEvent::SeSeen { chan, req_tid, .. }) if (chan, req_tid) == req => {
                seen = Some(l.seq);
            }
            Entry::Proto(TraceEvent::CePosted { chan, req_tid, .. })
                if (chan, req_tid) == req && posted.is_none() =>
            {
                posted = Some(l.seq);
            }
            _ => {}
        }
    }
    let executing = |l: &trace::Line| {
        l.who == trace::Who::Device
            && seen.is_some_and(|s| l.seq > s)
            && posted.is_some_and(|p| l.seq < p)
    };
    let needle = format!("on q{} as tid {}", req.0, trace::tid(req.1));
    story
        .iter()
        .filter(|l| match &l.entry {
            Entry::Note(n) => n.ends_with(&needle) || n.contains(&format!("{needle} ")),
            Entry::Proto(TraceEvent::Rejected { chan, pos, .. }) => {
                se_pos.contains(&(*chan, *pos)) || executing(l)
            }
            Entry::Proto(
                TraceEvent::DataCopied { chan, .. } | TraceEvent::MediaOp { chan, .. },
            ) => *chan == req.0 && executing(l),
            _ => l.request() == Some(req),
        })
        .map(|l| l.seq)
        .collect()
}

fn broken_corrupt(t: &mut String, o: &Options) -> Option<String> {
    let _ = writeln!(
        t,
        "   v3 mode on a transport without entry CRCs, coherent memory, one WRITE, one bit \
         flipped in its CE"
    );
    let log = TraceLog::new(4096);
    match corrupt::run(false, &log) {
        corrupt::Verdict::Accepted(e) => {
            trace_block(t, o, &log, &corrupt::region_map(false));
            para(t, "   FAILED: ", &e, "   ");
            Some(e)
        }
        corrupt::Verdict::Refused(s) => {
            let _ = writeln!(t, "   not caught: {s}");
            None
        }
        corrupt::Verdict::Harness(s) => {
            let _ = writeln!(t, "   the scenario itself failed: {s}");
            None
        }
    }
}

fn broken_adversarial(
    t: &mut String,
    o: &Options,
    first: u64,
    sc: &adversarial::Scenario,
    faults: Faults,
    catch: &[&str],
) -> (Option<u64>, Option<String>) {
    let map = adversarial::region_map();
    for seed in first..first.saturating_add(o.tries.max(1)) {
        let log = TraceLog::new(1 << 16);
        let r = adversarial::run(sc, faults, seed, &log);
        match &r.failure {
            Some(f) if catch.iter().any(|c| f.contains(c)) => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: {} requests on 2 queues, memory: evict {} per mille per tick, \
                     write-backs land up to {} ticks late",
                    sc.requests, r.memory.evict_per_mille, r.memory.max_delay
                );
                trace_block(t, o, &log, &map);
                for &req in &r.requests {
                    request_story(t, o, &log, &map, req);
                }
                let _ = writeln!(
                    t,
                    "   FAILED after {} steps ({} requests submitted, {} completed): {f}",
                    r.steps,
                    r.submitted,
                    r.counts.writes + r.counts.reads + r.counts.flushes
                );
                return (Some(seed), Some(f.clone()));
            }
            Some(f) => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: failed, but not the way this lesson is about: {f}"
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: the adversary did not catch it this time (a schedule \
                     may not reach the case)"
                );
            }
        }
    }
    let _ = writeln!(t, "   not caught in {} seeds from {first}", o.tries.max(1));
    (None, None)
}

fn broken_recorded(
    t: &mut String,
    o: &Options,
    first: u64,
    sc: &recorded::Scenario,
    sab: device::backend::Sabotage,
    rule: Rule,
) -> (Option<u64>, Option<String>) {
    let map = recorded::region_map();
    for seed in first..first.saturating_add(o.tries.max(1)) {
        let log = TraceLog::new(1 << 12);
        let run = match recorded::run(sc, sab, seed, &log) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(t, "   seed {seed}: the run itself failed: {e}");
                continue;
            }
        };
        match history::check(&run.history) {
            Err(CheckError::Violation(v)) if v.rule == rule => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: {} requests on 2 channels (QD {}), overlapping{}{}; every \
                     request recorded, the history checked by history::check",
                    sc.requests,
                    sc.queue_depth,
                    sc.crash_at
                        .map(|c| format!(", the backend crashes after {c} submissions"))
                        .unwrap_or_default(),
                    if sc.read_back {
                        ", then the hot region read back"
                    } else {
                        ""
                    }
                );
                if !o.quiet && o.context > 0 {
                    story(t, o, &log, &map, &run, &v);
                }
                let _ = writeln!(
                    t,
                    "   FAILED: the checker (history::check) rejects the history:"
                );
                for line in v.to_string().lines() {
                    para(t, "     ", line, "     ");
                }
                return (Some(seed), Some(v.to_string()));
            }
            Err(e) => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: rejected, but not by the rule this lesson is about: {e}"
                );
            }
            Ok(_) => {
                let _ = writeln!(
                    t,
                    "   seed {seed}: the checker accepted this history (the broken device got \
                     lucky with this schedule)"
                );
            }
        }
    }
    let _ = writeln!(t, "   not caught in {} seeds from {first}", o.tries.max(1));
    (None, None)
}

/// The trace of the counter-example's operations: their entries on both sides, the
/// harness's notes about them, the crash and the watermarks.
fn story(
    t: &mut String,
    o: &Options,
    log: &TraceLog,
    map: &RegionMap,
    run: &recorded::Run,
    v: &history::Violation,
) {
    let reqs: Vec<(u32, u64)> = v
        .ops
        .iter()
        .filter_map(|id| run.ops.get(id))
        .map(|&(c, tid)| (c as u32, tid))
        .collect();
    let story = log.story();
    let mut keep = HashSet::new();
    for &r in &reqs {
        keep.extend(request_lines(&story, r));
    }
    // For a lost durable write: the watermarks of its channel the host saw, and the crash.
    let durability = v.rule == Rule::LostDurable;
    let chans: Vec<String> = reqs.iter().map(|r| format!("q{}'s", r.0)).collect();
    let lines: Vec<trace::Line> = story
        .into_iter()
        .filter(|l| match &l.entry {
            Entry::Note(n) if durability && n.starts_with("CRASH") => true,
            Entry::Note(n) if durability && n.starts_with("host learnt") => {
                chans.iter().any(|c| n.contains(c.as_str()))
            }
            _ => keep.contains(&l.seq),
        })
        .collect();
    let lines = trace::render(&lines, map, o.context);
    let _ = writeln!(
        t,
        "   the counter-example's operations in the protocol trace (their entries and \
         execution{}; {} lines):",
        if durability {
            ", the watermarks the host saw, the crash"
        } else {
            ""
        },
        lines.len()
    );
    for l in lines {
        let _ = writeln!(t, " {l}");
    }
}
