//! The book (docs/, built by `mdbook build docs`) proves what it shows:
//! * every docs page is in SUMMARY.md, and every relative link of docs/*.md and README.md
//!   — to a file, to an anchor — resolves, with mdBook's heading ids;
//! * every command line shown (`cargo run -- …`, `cargo krun/ktest/xtest …`,
//!   `cbd-host …`) parses with the real command-line parsers (boot's `cli::parse_args`,
//!   cbd-host's `cli::parse`), failing with the page, the line and clap's error, and the
//!   cheap native ones (`cargo run -- inspect …`) run for real on a saved transport;
//! * the pictures in docs/img/ carry the layout's offsets, and each PNG is a rendering of
//!   the SVG beside it;
//! * the sequence diagrams name functions and constants that exist in the code they cite.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use device::inspect::svg;
use device::layout::*;

// cbd-host's command line, exactly as the binary declares it.
#[allow(dead_code, unused_imports)]
#[path = "../../host/src/bin/cbd-host/cli.rs"]
mod cbd_host_cli;

fn root() -> PathBuf {
    qemu::workspace_root()
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// README.md and every docs/*.md, as (path from the root, text).
fn pages() -> Vec<(String, String)> {
    let mut v = vec![("README.md".to_string(), read("README.md"))];
    let mut names: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.ends_with(".md").then_some(n)
        })
        .collect();
    names.sort();
    for n in names {
        let rel = format!("docs/{n}");
        v.push((rel.clone(), read(&rel)));
    }
    v
}

// ---------------------------------------------------------------- markdown, roughly

/// A line of a page, with whether it is inside a fenced code block (and that block's
/// language). A prose line that starts inside an inline code span opened on the line
/// before gets a backtick in front, so spans pair up line by line.
struct Line<'a> {
    no: usize,
    text: String,
    fence: Option<&'a str>,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    let mut open_span = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.trim()),
            };
            continue;
        }
        let mut text = l.to_string();
        if fence.is_none() {
            if t.is_empty() {
                open_span = false;
            }
            if open_span {
                text.insert(0, '`');
            }
            open_span = text.matches('`').count() % 2 == 1;
            if open_span {
                text.push('`');
            }
        }
        out.push(Line {
            no: i + 1,
            text,
            fence,
        });
    }
    out
}

/// The inline code spans of a prose line, and the line with them blanked out.
fn code_spans(line: &str) -> (Vec<&str>, String) {
    let mut spans = Vec::new();
    let mut prose = String::new();
    let mut rest = line;
    while let Some(i) = rest.find('`') {
        prose.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('`') {
            Some(j) => {
                spans.push(&after[..j]);
                prose.push_str(&" ".repeat(j + 2));
                rest = &after[j + 1..];
            }
            None => {
                rest = after;
            }
        }
    }
    prose.push_str(rest);
    (spans, prose)
}

/// The link targets of a prose line: `[text](target)`, `![alt](target)`,
/// `[id]: target`, `<img src="target">`, `<a href="target">`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut v = Vec::new();
    let b = prose.as_bytes();
    let mut i = 0;
    while let Some(j) = prose[i..].find("](") {
        let start = i + j + 2;
        let mut depth = 0;
        let mut end = start;
        while end < b.len() {
            match b[end] {
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        let t = prose[start..end.min(b.len())].trim();
        // `(target "title")`
        let t = t.split_once(' ').map_or(t, |(a, _)| a);
        v.push(t.trim_matches(['<', '>']).to_string());
        i = end.min(b.len());
    }
    let t = prose.trim_start();
    if t.starts_with('[')
        && let Some((_, rest)) = t.split_once("]: ")
        && !t.starts_with("[^")
    {
        v.push(rest.split_whitespace().next().unwrap_or("").to_string());
    }
    for attr in ["src=\"", "href=\""] {
        let mut s = prose;
        while let Some(k) = s.find(attr) {
            let r = &s[k + attr.len()..];
            if let Some(e) = r.find('"') {
                v.push(r[..e].to_string());
            }
            s = &r[r.len().min(1)..];
        }
    }
    v
}

/// mdBook's heading id (mdbook-html `id_from_content`): lowercase; letters, digits, `_`
/// and `-` kept; whitespace to `-`; everything else dropped. Markup is gone first.
fn heading_id(heading: &str) -> String {
    let text: String = heading.replace(['`', '*'], "");
    // `[text](link)` shows as text.
    let mut shown = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        shown.push_str(&rest[..i]);
        rest = rest[i + 2..].split_once(')').map_or("", |x| x.1);
    }
    shown.push_str(rest);
    shown
        .replace('[', "")
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// Every anchor a page offers: heading ids (a repeated one gets `-1`, `-2`, … as in
/// mdBook), `{#custom}` ids and HTML `id="…"`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for l in lines(text).iter().filter(|l| l.fence.is_none()) {
        let t = l.text.trim_start();
        if t.starts_with('#') && t.trim_start_matches('#').starts_with(' ') {
            let h = t.trim_start_matches('#').trim();
            let id = match h.rsplit_once("{#") {
                Some((_, custom)) => custom.trim_end_matches('}').to_string(),
                None => heading_id(h),
            };
            let mut unique = id.clone();
            let mut n = 1;
            while used.contains(&unique) {
                unique = format!("{id}-{n}");
                n += 1;
            }
            used.insert(unique);
        }
        let mut s = l.text.as_str();
        while let Some(k) = s.find("id=\"") {
            let r = &s[k + 4..];
            if let Some(e) = r.find('"') {
                used.insert(r[..e].to_string());
            }
            s = &r[1.min(r.len())..];
        }
    }
    used
}

/// Every broken relative link of these pages, as "page:line: `target`: why".
fn broken_links(pages: &[(String, String)], exists: &dyn Fn(&str) -> bool) -> Vec<String> {
    let texts: BTreeMap<&str, &str> = pages
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let mut bad = Vec::new();
    for (page, text) in pages {
        let dir = Path::new(page).parent().unwrap_or(Path::new(""));
        for l in lines(text).iter().filter(|l| l.fence.is_none()) {
            let (_, prose) = code_spans(&l.text);
            for t in link_targets(&prose) {
                let scheme = t.split_once(':').is_some_and(|(s, _)| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                });
                if t.is_empty() || scheme {
                    continue;
                }
                let (file, anchor) = t
                    .split_once('#')
                    .map_or((t.as_str(), None), |(f, a)| (f, Some(a)));
                let target = if file.is_empty() {
                    page.clone()
                } else {
                    normalize(&dir.join(file))
                };
                let at = format!("{page}:{}: `{t}`", l.no);
                if target.starts_with("..") || !exists(&target) {
                    bad.push(format!("{at}: no file {target}"));
                    continue;
                }
                if page.starts_with("docs/") && !target.starts_with("docs/") {
                    bad.push(format!(
                        "{at}: {target} is outside docs/, so not in the book"
                    ));
                    continue;
                }
                if page.starts_with("docs/")
                    && page != "docs/SUMMARY.md"
                    && target == "docs/README.md"
                    && !file.is_empty()
                {
                    bad.push(format!("{at}: the book serves docs/README.md as index.html; link a section of another page"));
                    continue;
                }
                if let Some(a) = anchor {
                    match texts.get(target.as_str()) {
                        Some(tt) if !anchors(tt).contains(a) => bad.push(format!(
                            "{at}: no heading with id `{a}` in {target} (ids: {})",
                            anchors(tt).into_iter().collect::<Vec<_>>().join(" ")
                        )),
                        Some(_) => {}
                        None if target.ends_with(".md") => {
                            bad.push(format!("{at}: {target} is not a page the check reads"))
                        }
                        None => bad.push(format!("{at}: an anchor into a file that is not a page")),
                    }
                }
            }
        }
    }
    bad
}

/// `a/b/../c` → `a/c`.
fn normalize(p: &Path) -> String {
    let mut v: Vec<&str> = Vec::new();
    for c in p.to_str().unwrap_or("").split('/') {
        match c {
            "" | "." => {}
            ".." if v.last().is_some_and(|x| *x != "..") => {
                v.pop();
            }
            c => v.push(c),
        }
    }
    v.join("/")
}

#[test]
fn every_page_is_in_the_summary_in_order() {
    let summary = read("docs/SUMMARY.md");
    let mut listed = Vec::new();
    for l in summary.lines() {
        for t in link_targets(l) {
            listed.push(t);
        }
    }
    for (page, _) in pages() {
        let Some(name) = page.strip_prefix("docs/") else {
            continue;
        };
        if name != "SUMMARY.md" {
            assert!(
                listed.iter().any(|l| l == name),
                "docs/SUMMARY.md does not list {name}"
            );
        }
    }
    for l in &listed {
        assert!(
            root().join("docs").join(l).is_file(),
            "SUMMARY.md lists {l}, which is missing"
        );
    }
    // The reading order: from booting the device to the lifecycle, then the reference.
    let pos = |n: &str| {
        listed
            .iter()
            .position(|l| l == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let order = [
        "kernel.md",
        "cxl-bringup.md",
        "protocol.md",
        "life-of-a-write.md",
        "noncoherent.md",
        "durability.md",
        "consistency.md",
        "lifecycle.md",
        "architecture.md",
    ];
    for w in order.windows(2) {
        assert!(
            pos(w[0]) < pos(w[1]),
            "SUMMARY.md: {} should come before {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn every_link_and_anchor_resolves() {
    let exists = |rel: &str| root().join(rel).exists();
    let bad = broken_links(&pages(), &exists);
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

/// The check itself fails on what it should: a missing file, a missing anchor, a link
/// out of the book, and names each.
#[test]
fn the_link_check_names_broken_links() {
    let pages = vec![
        (
            "docs/a.md".to_string(),
            "# Page A\n## Second `part` (really)\n\n[ok](b.md#b-heading), [self](#second-part-really)\n\
             ![pic](img/x.svg) [gone](c.md) [no anchor](b.md#nope)\n[out](../README.md) `[not](a link)`\n\
             ```sh\n[in code](zzz.md)\n```\n[twice](b.md#b-heading-1)\n"
                .to_string(),
        ),
        ("docs/b.md".to_string(), "# B heading\n\n## B heading\n".to_string()),
        ("README.md".to_string(), "[docs](docs/a.md#page-a) [bad](docs/a.md#page-b)\n".to_string()),
    ];
    let exists = |p: &str| ["docs/a.md", "docs/b.md", "docs/img/x.svg", "README.md"].contains(&p);
    let bad = broken_links(&pages, &exists);
    let want = [
        "docs/a.md:5: `c.md`: no file docs/c.md",
        "docs/a.md:5: `b.md#nope`: no heading with id `nope` in docs/b.md",
        "docs/a.md:6: `../README.md`: README.md is outside docs/",
        "README.md:1: `docs/a.md#page-b`: no heading with id `page-b`",
    ];
    assert_eq!(bad.len(), want.len(), "{bad:#?}");
    for (b, w) in bad.iter().zip(want) {
        assert!(b.starts_with(w), "{b}\n  does not start with\n{w}");
    }
}

// ---------------------------------------------------------------- commands

/// A command line shown in a page.
#[derive(Debug)]
struct Shown {
    page: String,
    line: usize,
    text: String,
    /// `cbd-host`'s arguments, or boot's (what `cargo run --` passes).
    cbd_host: bool,
    args: Vec<String>,
}

/// Placeholders in synopses and the sample values they stand for (numbers where the
/// parser wants one; names and paths parse as they are).
fn placeholder(w: &str) -> String {
    match w {
        "N" | "ID" | "DEV_ID" | "NS" | "MIB" | "BYTES" | "SIZE" => "1".into(),
        "SECS" => "2".into(),
        // `PATH[:MIB]`: the optional part left out.
        w if w.contains('[') && !w.starts_with('[') => w[..w.find('[').unwrap_or(0)].into(),
        w => w.into(),
    }
}

/// `a [b] [c|d]` → `a`, `a b`, `a c`, `a d`.
fn variants(words: &[&str]) -> Vec<Vec<String>> {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut open = None;
    for (i, w) in words.iter().enumerate() {
        if w.starts_with('[') && open.is_none() {
            open = Some(i);
        }
        if w.ends_with(']')
            && let Some(s) = open.take()
        {
            groups.push((s, i));
        }
    }
    let base = |keep: Option<(usize, usize, &str)>| -> Vec<String> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if let Some(&(s, e)) = groups.iter().find(|g| g.0 == i) {
                if let Some((ks, _, alt)) = keep
                    && ks == s
                {
                    v.extend(alt.split_whitespace().map(placeholder));
                }
                i = e + 1;
                continue;
            }
            v.push(placeholder(words[i]));
            i += 1;
        }
        v
    };
    let mut out = vec![base(None)];
    for &(s, e) in &groups {
        let inner = words[s..=e].join(" ");
        let inner = inner.strip_prefix('[').unwrap_or(&inner);
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        for alt in inner.split('|') {
            out.push(base(Some((s, e, alt))));
        }
    }
    out
}

/// The commands of one shell line (a code block line, or an inline code span).
fn commands_in(page: &str, no: usize, line: &str, out: &mut Vec<Shown>) {
    let line = line.split(" #").next().unwrap_or("");
    let line = line
        .split(['─', '│', '┌', '└', '▶', '◀'])
        .next()
        .unwrap_or("");
    for part in line.split("&&").flat_map(|p| p.split(';')) {
        let mut words: Vec<&str> = part.split_whitespace().collect();
        // Environment assignments before the command.
        while words
            .first()
            .is_some_and(|w| w.contains('=') && !w.starts_with('-'))
        {
            words.remove(0);
        }
        let (cbd_host, rest): (bool, Vec<&str>) = match words.as_slice() {
            ["cbd-host", rest @ ..] => (true, rest.to_vec()),
            ["cargo", "run", "--", rest @ ..] => (false, rest.to_vec()),
            ["cargo", "run"] => (false, Vec::new()),
            ["cargo", "krun", rest @ ..] => (false, rest.to_vec()),
            ["cargo", "ktest", rest @ ..] => (false, [&["ktest"][..], rest].concat()),
            ["cargo", "xtest", rest @ ..] => (false, [&["test"][..], rest].concat()),
            _ => continue,
        };
        // Prose after a command in a span ("`cargo run` (the demo)") is not part of it.
        let rest: Vec<&str> = rest
            .into_iter()
            .take_while(|w| !w.starts_with('('))
            .collect();
        for args in variants(&rest) {
            out.push(Shown {
                page: page.into(),
                line: no,
                text: part.trim().into(),
                cbd_host,
                args,
            });
        }
    }
}

/// Every command shown in code blocks (shell or unmarked; not `text` output) and inline
/// code spans of README.md and docs/*.md.
fn shown_commands() -> Vec<Shown> {
    let mut out = Vec::new();
    for (page, text) in pages() {
        let mut cont = String::new();
        for l in lines(&text) {
            match l.fence {
                Some(lang)
                    if lang.is_empty() || ["sh", "bash", "shell", "console"].contains(&lang) =>
                {
                    let t = l.text.trim();
                    if let Some(head) = t.strip_suffix('\\') {
                        cont.push_str(head);
                        continue;
                    }
                    cont.push_str(t);
                    let whole = std::mem::take(&mut cont);
                    commands_in(&page, l.no, &whole, &mut out);
                }
                Some(_) => {}
                None => {
                    for span in code_spans(&l.text).0 {
                        commands_in(&page, l.no, span, &mut out);
                    }
                }
            }
        }
    }
    out
}

fn parse_shown(c: &Shown) -> Result<(), String> {
    let r = if c.cbd_host {
        cbd_host_cli::parse(std::iter::once("cbd-host".to_string()).chain(c.args.iter().cloned()))
            .map(|_| ())
    } else {
        boot::cli::parse_args(&c.args).map(|_| ())
    };
    match r {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!(
            "{}:{}: `{}` -> {:?}:\n{e}",
            c.page, c.line, c.text, c.args
        )),
    }
}

#[test]
fn every_command_shown_parses() {
    let cmds = shown_commands();
    let bad: Vec<String> = cmds.iter().filter_map(|c| parse_shown(c).err()).collect();
    assert!(
        bad.is_empty(),
        "{} command(s) shown do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
    // The check sees what it should: both programs, many pages.
    let host = cmds.iter().filter(|c| c.cbd_host).count();
    let pages: BTreeSet<&str> = cmds.iter().map(|c| c.page.as_str()).collect();
    assert!(
        cmds.len() >= 60 && host >= 10 && pages.len() >= 8,
        "{} commands ({host} cbd-host) on {pages:?}",
        cmds.len()
    );
    for needle in [
        "cargo run -- inspect /dev/shm/cbdfw-ivshmem.raw --json",
        "cbd-host inspect ivshmem --watch 2",
        "cargo ktest",
        "cargo xtest",
    ] {
        assert!(
            cmds.iter().any(|c| c.text.starts_with(needle)),
            "not found: {needle}"
        );
    }
}

/// A command that does not parse is caught, with its page and line and clap's words.
#[test]
fn a_command_that_does_not_parse_is_named() {
    let mut v = Vec::new();
    commands_in(
        "docs/x.md",
        7,
        "cargo run -- inspect --wach f  # typo",
        &mut v,
    );
    commands_in("docs/x.md", 8, "cbd-host --queues 65", &mut v);
    commands_in(
        "docs/x.md",
        9,
        "cargo ktest [FILTER] && cbd-host stats N",
        &mut v,
    );
    let errs: Vec<String> = v.iter().filter_map(|c| parse_shown(c).err()).collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("docs/x.md:7: `cargo run -- inspect --wach f`")
            && errs[0].contains("--wach"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("docs/x.md:8:") && errs[1].contains("1..=64"),
        "{}",
        errs[1]
    );
    let args: Vec<&Vec<String>> = v.iter().map(|c| &c.args).collect();
    assert!(
        args.contains(&&vec!["ktest".to_string()])
            && args.contains(&&vec!["ktest".to_string(), "FILTER".to_string()])
    );
    assert!(args.contains(&&vec!["stats".to_string(), "1".to_string()]));
}

/// A transport as a pair leaves it: backend, host, blkdev, traffic on two channels.
fn saved_transport(path: &Path) {
    use device::backend::{Backend, BackendConfig};
    use device::native::{MmapMem, VecMedia};
    use device::shm::Shm;
    use device::trace::NoTrace;
    use device::transport::{Transport, format_flags};
    use host::engine::{Host, HostConfig, Request};
    const T0: u64 = 1_700_000_000_000_000_000;
    let mem = MmapMem::create(path, TransportInfo::region_for(3)).unwrap();
    let shm = Shm::new(&mem, &NoTrace);
    Transport::format(shm, format_flags(true), false, T0).unwrap();
    let mut scratch = vec![0u8; chan::MAX_IO as usize];
    let cfg = BackendConfig {
        n_handlers: 2,
        noncoherent: true,
        ..BackendConfig::default()
    };
    let mut backend = Backend::start(shm, cfg, VecMedia::new(8 << 20), &mut scratch, T0).unwrap();
    let host = Host::register(
        shm,
        HostConfig {
            hostname: "book",
            noncoherent: true,
            ..HostConfig::default()
        },
        T0,
    )
    .unwrap();
    let mut dev = host
        .dev_start(host.find_backend(T0).unwrap(), 2, T0)
        .unwrap();
    while !dev.poll_ready(T0).unwrap() {
        backend.poll(T0).unwrap();
    }
    let mut buf = vec![0u8; 8192];
    for (i, q) in dev.queues.iter_mut().enumerate() {
        let off = i as u64 * 8192;
        q.submit(
            Request {
                op: op::WRITE,
                offset: off,
                len: 4096,
            },
            &[7u8; 4096],
        )
        .unwrap();
        q.submit(
            Request {
                op: op::READ,
                offset: off,
                len: 8192,
            },
            &[],
        )
        .unwrap();
    }
    for _ in 0..4 {
        backend.poll(T0).unwrap();
    }
    // One completion consumed on queue 0, the rest left in the rings.
    assert!(dev.queues[0].poll_at(&mut buf, T0).unwrap().is_some());
}

#[test]
fn the_inspect_commands_shown_run() {
    let dir = std::env::temp_dir().join(format!("cbdfw-book-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("saved.raw");
    saved_transport(&saved);
    let mut ran = 0;
    let mut seen = BTreeSet::new();
    for c in shown_commands() {
        if c.cbd_host || c.args.first().is_none_or(|a| a != "inspect") {
            continue;
        }
        // Paths shown become the saved transport; pictures go to the scratch directory.
        let mut args = Vec::new();
        let mut outs = Vec::new();
        let mut it = c.args.iter().skip(1).peekable();
        while let Some(a) = it.next() {
            if (a == "--svg" || a == "--png") && it.peek().is_some() {
                let shown = it.next().unwrap();
                let out = dir.join(Path::new(shown).file_name().unwrap());
                outs.push((shown.clone(), out.clone()));
                args.push(a.clone());
                args.push(out.display().to_string());
            } else if a.ends_with(".raw") || a == "PATH" || a == "…" {
                args.push(saved.display().to_string());
            } else {
                args.push(a.clone());
            }
        }
        let key = args.join(" ");
        if !seen.insert(key) {
            continue;
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_boot"));
        cmd.arg("inspect").args(&args);
        let at = format!("{}:{}: `{}`", c.page, c.line, c.text);
        if args.iter().any(|a| a == "--watch") {
            // It refreshes until interrupted: it must still be running after a while,
            // having printed a report.
            let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1500));
            assert!(child.try_wait().unwrap().is_none(), "{at}: exited");
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("every") && text.contains("findings"),
                "{at}: {text}"
            );
            ran += 1;
            continue;
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{at}: {args:?}\n{stdout}\n{stderr}"
        );
        if outs.is_empty() {
            if args.iter().any(|a| a == "--json") {
                let v: serde_json::Value =
                    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(v["blkdevs"].as_array().map(|a| a.len()), Some(1), "{at}");
            } else {
                assert!(
                    stdout.contains("segments: 2 in use") && stdout.contains("findings"),
                    "{at}: {stdout}"
                );
            }
        }
        for (shown, out) in outs {
            let bytes =
                std::fs::read(&out).unwrap_or_else(|e| panic!("{at}: {}: {e}", out.display()));
            let committed = root().join(&shown);
            let from_docs =
                shown.starts_with("docs/img/") && !args.contains(&saved.display().to_string());
            if shown.ends_with(".svg") {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("data-name=\"SUBMR_OFF\""), "{at}");
                if from_docs {
                    assert!(
                        std::fs::read_to_string(&committed).unwrap() == text,
                        "{at}: {shown} is not what the command draws"
                    );
                }
            } else {
                assert!(boot::png::source_crc(&bytes).is_some(), "{at}: not our PNG");
                if from_docs {
                    let svg = std::fs::read_to_string(committed.with_extension("svg")).unwrap();
                    assert_eq!(
                        boot::png::source_crc(&bytes),
                        Some(boot::png::crc32(svg.as_bytes())),
                        "{at}"
                    );
                }
            }
        }
        ran += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ran >= 6, "only {ran} inspect commands ran");
}

// ---------------------------------------------------------------- pictures

/// `data-name` → (`data-offset`, label text) of every box of a picture.
fn labels(svg: &str) -> BTreeMap<String, (u64, String)> {
    let mut m = BTreeMap::new();
    for l in svg.lines() {
        let attr = |k: &str| {
            let i = l.find(&format!("{k}=\""))? + k.len() + 2;
            Some(l[i..i + l[i..].find('"')?].to_string())
        };
        if let (Some(n), Some(o)) = (attr("data-name"), attr("data-offset")) {
            let off = u64::from_str_radix(o.trim_start_matches("0x"), 16).unwrap();
            let text = l.split("<text").nth(1).unwrap_or("").to_string();
            m.entry(n).or_insert((off, text));
        }
    }
    m
}

/// What a picture of `info` must say about each named box (as host/tests/inspect.rs,
/// which checks the live pictures of a running pair).
fn want_offsets(info: &TransportInfo) -> BTreeMap<String, u64> {
    let el = info.entry_layout();
    let mut m: BTreeMap<String, u64> = [
        ("tinfo", 0),
        ("HOST_AREA_OFF", info.host_area_off),
        ("BACKEND_AREA_OFF", info.backend_area_off),
        ("BLKDEV_AREA_OFF", info.blkdev_area_off),
        ("SEGMENT_AREA_OFF", info.segment_area_off),
        ("SEG_INFO0", chan::SEG_INFO0),
        ("SEG_INFO1", chan::SEG_INFO1),
        ("CTRL_OFF", chan::CTRL_OFF),
        ("COMPR_OFF", chan::COMPR_OFF),
        ("SUBMR_OFF", el.submr_off()),
        ("DATA_OFF", chan::DATA_OFF),
        ("line.nc_host", chan::CTRL_OFF + ctrl::NC_HOST_LINE),
        ("line.nc_dev", chan::CTRL_OFF + ctrl::NC_DEV_LINE),
        ("line.dur_dev", chan::CTRL_OFF + ctrl::DUR_DEV_LINE),
        ("line.dur_host", chan::CTRL_OFF + ctrl::DUR_HOST_LINE),
    ]
    .into_iter()
    .map(|(n, o)| (n.to_string(), o))
    .collect();
    for (t, base) in [
        (ctrl::TABLE, chan::CTRL_OFF),
        (nc_host::TABLE, chan::CTRL_OFF + ctrl::NC_HOST_LINE),
        (dur_dev::TABLE, chan::CTRL_OFF + ctrl::DUR_DEV_LINE),
        (tinfo::TABLE, 0),
    ] {
        for f in t.fields {
            m.insert(format!("{}.{}", t.name, f.name), base + f.offset as u64);
        }
    }
    m
}

#[test]
fn the_pictures_in_docs_img_match_the_layout() {
    let img = root().join("docs/img");
    let mut svgs = 0;
    let mut pngs = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        match p.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                let text = std::fs::read_to_string(&p).unwrap();
                let got = labels(&text);
                // The transport drawn: its segment count is in a label, its flags in the
                // entry formats drawn.
                let segs: u64 = got["SEGMENT_AREA_OFF"]
                    .1
                    .split("area x")
                    .nth(1)
                    .and_then(|s| s.split(' ').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no segment count"));
                let nc = text.contains("se_both_crc");
                let info = TransportInfo::for_size(
                    TransportInfo::region_for(segs),
                    device::transport::format_flags(nc),
                )
                .unwrap();
                for (n, off) in want_offsets(&info) {
                    let (o, label) = got.get(&n).unwrap_or_else(|| panic!("{name}: no box {n}"));
                    assert_eq!(*o, off, "{name}: {n}");
                    assert!(
                        label.contains(&format!("@ {off:#x}")),
                        "{name}: {n}: {label}"
                    );
                }
                if name == "layout.svg" {
                    let now = svg::layout_svg(&svg::example_info(), None, None);
                    assert!(
                        now == text,
                        "docs/img/layout.svg is stale: run `cargo run -- inspect --svg docs/img/layout.svg --png docs/img/layout.png`"
                    );
                }
                svgs += 1;
            }
            Some("png") => {
                let png = std::fs::read(&p).unwrap();
                let svg_path = p.with_extension("svg");
                let svg_text = std::fs::read_to_string(&svg_path).unwrap_or_else(|e| {
                    panic!("{name}: every PNG is a copy of an SVG beside it ({e})")
                });
                assert_eq!(
                    boot::png::source_crc(&png),
                    Some(boot::png::crc32(svg_text.as_bytes())),
                    "docs/img/{name} was not drawn from the current {}: regenerate it \
                     (CBDFW_BLESS=1 cargo test -p boot --test book the_pictures)",
                    svg_path.display()
                );
                let tree_w = labels_size(&svg_text);
                assert_eq!(
                    boot::png::dimensions(&png),
                    Some((
                        (tree_w.0 * boot::png::SCALE) as u32,
                        (tree_w.1 * boot::png::SCALE) as u32
                    )),
                    "{name}"
                );
                pngs += 1;
            }
            _ => {}
        }
    }
    assert!(
        svgs >= 2 && pngs >= svgs,
        "{svgs} SVGs, {pngs} PNGs in docs/img"
    );
}

/// Width and height of an SVG's root element.
fn labels_size(svg: &str) -> (f32, f32) {
    let attr = |k: &str| -> f32 {
        let i = svg.find(&format!(" {k}=\"")).unwrap() + k.len() + 3;
        svg[i..i + svg[i..].find('"').unwrap()].parse().unwrap()
    };
    (attr("width"), attr("height"))
}

/// `CBDFW_BLESS=1`: write docs/img/X.png from each docs/img/X.svg (how the committed PNGs
/// are made; the layout SVG itself comes from `cargo run -- inspect --svg`).
#[test]
fn the_pictures_bless() {
    if std::env::var_os("CBDFW_BLESS").is_none() {
        return;
    }
    for e in std::fs::read_dir(root().join("docs/img")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "svg") {
            let png = boot::png::render(&std::fs::read_to_string(&p).unwrap()).unwrap();
            std::fs::write(p.with_extension("png"), png).unwrap();
        }
    }
}

// ---------------------------------------------------------------- sequence diagrams

/// Every file under the paths a diagram cites.
fn sources(paths: &[&str]) -> String {
    let mut s = String::new();
    for p in paths {
        let full = root().join(p);
        if full.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                let f = e.unwrap().path();
                if f.extension().is_some_and(|x| x == "rs") {
                    s += &std::fs::read_to_string(f).unwrap();
                }
            }
        } else {
            s += &std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }
    s
}

/// `name(…)` and `NAME_WITH_UNDERSCORES` of a diagram that its code does not define.
fn unknown_names(diagram: &str, code: &str) -> Vec<String> {
    let is_id = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<(usize, char)> = diagram.char_indices().collect();
    let mut missing = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_id(chars[i].1) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && is_id(chars[j].1) {
            j += 1;
        }
        let (s, e) = (chars[i].0, chars.get(j).map_or(diagram.len(), |c| c.0));
        let w = &diagram[s..e];
        i = j;
        let call = diagram[e..].starts_with('(');
        let snake = w.starts_with(|c: char| c.is_ascii_lowercase());
        let caps = w.contains('_')
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
        if call && snake {
            if !code.contains(&format!("fn {w}(")) && !code.contains(&format!("fn {w}<")) {
                missing.insert(format!("{w}()"));
            }
        } else if caps {
            let defined = [
                format!("const {w}:"),
                format!("{w}: "),
                format!("static {w}:"),
            ]
            .iter()
            .any(|d| code.contains(d.as_str()));
            if !defined {
                missing.insert(w.to_string());
            }
        }
    }
    missing.into_iter().collect()
}

/// The diagrams of the pages: a text block right after a "Code: `path`, …" paragraph.
fn diagrams() -> Vec<(String, usize, Vec<String>, String)> {
    let mut out = Vec::new();
    for (page, text) in pages() {
        let mut code_paths: Option<Vec<String>> = None;
        let mut para = String::new();
        let mut blank = false;
        let mut block: Option<(usize, String)> = None;
        for (i, l) in text.lines().enumerate() {
            if l.starts_with("```") {
                match block.take() {
                    Some((start, body)) => {
                        if let Some(paths) = code_paths.take() {
                            out.push((page.clone(), start, paths, body));
                        }
                    }
                    None => {
                        if para.starts_with("Code:") {
                            code_paths =
                                Some(code_spans(&para).0.iter().map(|s| s.to_string()).collect());
                        }
                        block = Some((i + 1, String::new()));
                        para.clear();
                    }
                }
                continue;
            }
            if let Some((_, body)) = block.as_mut() {
                body.push_str(l);
                body.push('\n');
            } else if l.trim().is_empty() {
                // The paragraph before the block counts: kept until the next one starts.
                blank = true;
            } else {
                if std::mem::take(&mut blank) {
                    para.clear();
                }
                para.push_str(l);
                para.push(' ');
            }
        }
    }
    out
}

#[test]
fn the_sequence_diagrams_name_real_code() {
    let ds = diagrams();
    let mut bad = Vec::new();
    for (page, line, paths, body) in &ds {
        let refs: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
        let code = sources(&refs);
        for m in unknown_names(body, &code) {
            bad.push(format!("{page}:{line}: {m} is not in {}", paths.join(", ")));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let named: BTreeSet<&str> = ds.iter().map(|d| d.0.as_str()).collect();
    assert!(
        ds.len() >= 8 && named.contains("docs/sequences.md"),
        "{} diagrams on {named:?}",
        ds.len()
    );
}

#[test]
fn the_diagram_check_catches_a_renamed_function() {
    let code = "pub fn submit_intent(x: u32) {}\npub const SUBMR_HEAD: u64 = 72;\n wire! { COMPR_TAIL: u32 = 84 }";
    let d = "submit_intent(WRITE) ──▶ SUBMR_HEAD, COMPR_TAIL\n post_ce() ◀── SUBMR_TAIL foo(x)";
    assert_eq!(unknown_names(d, code), ["SUBMR_TAIL", "foo()", "post_ce()"]);
}

// ---------------------------------------------------------------- words

/// The pages speak of the code and of the protocol, never of internal work items.
#[test]
fn no_work_item_numbers_in_the_docs() {
    for (page, text) in pages() {
        for (i, l) in text.lines().enumerate() {
            let low = l.to_lowercase();
            for w in ["issue ", "issue #", "work item", "ticket "] {
                if let Some(k) = low.find(w) {
                    let after = &low[k + w.len()..];
                    assert!(
                        !after
                            .trim_start_matches(['#', ' '])
                            .starts_with(|c: char| c.is_ascii_digit())
                            && w != "work item",
                        "{page}:{}: {l}",
                        i + 1
                    );
                }
            }
        }
    }
}
