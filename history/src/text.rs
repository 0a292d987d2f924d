//! The line-oriented text format (see the crate docs for the grammar).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::model::*;

const MAGIC: &str = "cbd-history";
const VERSION: &str = "1";

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Cbd => "cbd",
        Level::Linux => "linux",
    }
}

/// Appends a digest list: `z` for the zero sector, hex otherwise, `*N` for runs.
pub(crate) fn push_digests(out: &mut String, ds: &[Digest]) {
    let zero = zero_digest();
    let mut i = 0;
    let mut first = true;
    while i < ds.len() {
        let d = ds[i];
        let mut n = 1;
        while i + n < ds.len() && ds[i + n] == d {
            n += 1;
        }
        if !first {
            out.push(',');
        }
        first = false;
        if d == zero {
            out.push('z');
        } else {
            let _ = write!(out, "{d:x}");
        }
        if n > 1 {
            let _ = write!(out, "*{n}");
        }
        i += n;
    }
}

/// The `inv` line of an operation (no newline).
pub(crate) fn inv_line(op: &Op) -> String {
    let mut s = format!(
        "inv {} t={} ch={} tid={} {}",
        op.id,
        op.invoke,
        op.chan,
        op.tid,
        op.kind.name()
    );
    if op.kind.has_range() {
        let _ = write!(s, " off={:#x} len={}", op.offset, op.len);
    }
    if op.kind == OpKind::Write {
        s.push_str(" d=");
        push_digests(&mut s, &op.written);
    }
    s
}

/// The `ret` line of a completed operation (no newline).
pub(crate) fn ret_line(op: &Op) -> Option<String> {
    let (t, out) = op.complete?;
    let mut s = format!("ret {} t={t}", op.id);
    match out {
        Outcome::Ok => s.push_str(" ok"),
        Outcome::Err(e) => {
            let _ = write!(s, " err={e}");
        }
    }
    if op.durable {
        s.push_str(" durable");
    }
    if op.kind == OpKind::Read && out == Outcome::Ok {
        s.push_str(" d=");
        push_digests(&mut s, &op.read);
    }
    Some(s)
}

/// The first line of the text format (with its newline).
pub(crate) fn header_line(h: &Header) -> String {
    format!(
        "{MAGIC} {VERSION} level={} initial={} discard={}\n",
        level_name(h.level),
        match h.initial {
            Initial::Zero => "zero",
            Initial::Unknown => "unknown",
        },
        match h.discard {
            DiscardMode::Zeroes => "zeroes",
            DiscardMode::Undefined => "undefined",
        }
    )
}

/// Serialises a history; [`parse`] reads it back unchanged.
pub fn to_text(h: &History) -> String {
    let mut ev: Vec<(u64, u8, usize, String)> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        ev.push((op.invoke, 0, i, inv_line(op)));
        if let Some(s) = ret_line(op) {
            ev.push((op.completed_at().unwrap_or(0), 1, i, s));
        }
    }
    for (i, w) in h.watermarks.iter().enumerate() {
        ev.push((
            w.t,
            2,
            i,
            format!("watermark t={} ch={} tid={}", w.t, w.chan, w.tid),
        ));
    }
    for (i, c) in h.confirms.iter().enumerate() {
        ev.push((
            c.t,
            3,
            i,
            format!("confirm t={} ch={} tid={}", c.t, c.chan, c.tid),
        ));
    }
    for (i, c) in h.crashes.iter().enumerate() {
        let mut s = format!("crash t={}", c.t);
        for m in &c.media {
            let _ = write!(s, "\nmedia off={:#x} d=", m.offset);
            push_digests(&mut s, &m.digests);
        }
        ev.push((c.t, 4, i, s));
    }
    ev.sort_by_key(|e| (e.0, e.1, e.2));
    let mut out = header_line(&h.header);
    for (_, _, _, s) in ev {
        out.push_str(&s);
        out.push('\n');
    }
    out
}

struct Line<'a> {
    no: usize,
    words: Vec<&'a str>,
    kv: HashMap<&'a str, &'a str>,
    flags: Vec<&'a str>,
}

impl<'a> Line<'a> {
    fn err(&self, msg: impl Into<String>) -> HistoryError {
        HistoryError {
            line: Some(self.no),
            msg: msg.into(),
        }
    }
    fn get(&self, key: &str) -> Result<&'a str, HistoryError> {
        self.kv
            .get(key)
            .copied()
            .ok_or_else(|| self.err(format!("missing {key}=")))
    }
    fn num(&self, key: &str) -> Result<u64, HistoryError> {
        let v = self.get(key)?;
        parse_num(v).ok_or_else(|| self.err(format!("{key}={v}: not a number")))
    }
    /// Only these keys; and, unless `words`, no bare words after the verb.
    fn only(&self, keys: &[&str], words: bool) -> Result<(), HistoryError> {
        if let Some(k) = self.kv.keys().find(|k| !keys.contains(k)) {
            return Err(self.err(format!("unexpected {k}=")));
        }
        if let (false, Some(f)) = (words, self.flags.first()) {
            return Err(self.err(format!("unexpected word {f:?}")));
        }
        Ok(())
    }
    fn digests(&self, key: &str) -> Result<Vec<Digest>, HistoryError> {
        parse_digests(self.get(key)?).map_err(|m| self.err(format!("{key}=: {m}")))
    }
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_digests(s: &str) -> Result<Vec<Digest>, String> {
    let zero = zero_digest();
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for item in s.split(',') {
        let (v, n) = match item.split_once('*') {
            Some((v, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("bad repeat count in {item:?}"))?;
                if n == 0 || n > (MAX_REQUEST as usize) {
                    return Err(format!("repeat count out of range in {item:?}"));
                }
                (v, n)
            }
            None => (item, 1),
        };
        let d = if v == "z" {
            zero
        } else if !v.is_empty() && v.len() <= 16 {
            u64::from_str_radix(v, 16).map_err(|_| format!("bad digest {v:?}"))?
        } else {
            return Err(format!("bad digest {v:?}"));
        };
        if out.len() + n > 64 * MAX_REQUEST as usize {
            return Err("too many digests".into());
        }
        out.extend(std::iter::repeat_n(d, n));
    }
    Ok(out)
}

fn kind_of(s: &str) -> Option<OpKind> {
    Some(match s {
        "write" => OpKind::Write,
        "read" => OpKind::Read,
        "flush" => OpKind::Flush,
        "discard" => OpKind::Discard,
        "wzeroes" => OpKind::WriteZeroes,
        _ => return None,
    })
}

/// Parses the text format. Every problem is an error naming its line; the result is
/// also [validated](History::validate).
pub fn parse(text: &str) -> Result<History, HistoryError> {
    let mut h: Option<History> = None;
    let mut index: HashMap<OpId, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut line = Line {
            no: i + 1,
            words: Vec::new(),
            kv: HashMap::new(),
            flags: Vec::new(),
        };
        for w in content.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                if line.kv.insert(k, v).is_some() {
                    return Err(line.err(format!("{k}= given twice")));
                }
            } else {
                line.words.push(w);
            }
        }
        let Some(hist) = h.as_mut() else {
            if line.words.first() != Some(&MAGIC) {
                return Err(line.err(format!(
                    "expected the header line \"{MAGIC} {VERSION} ...\""
                )));
            }
            if line.words.get(1) != Some(&VERSION) || line.words.len() != 2 {
                return Err(line.err(format!("unsupported version (this reader knows {VERSION})")));
            }
            line.only(&["level", "initial", "discard"], true)?;
            let mut hd = Header::default();
            if let Some(&l) = line.kv.get("level") {
                hd.level = match l {
                    "cbd" => Level::Cbd,
                    "linux" => Level::Linux,
                    _ => return Err(line.err(format!("level={l}: expected cbd or linux"))),
                };
            }
            if let Some(&v) = line.kv.get("initial") {
                hd.initial = match v {
                    "zero" => Initial::Zero,
                    "unknown" => Initial::Unknown,
                    _ => return Err(line.err(format!("initial={v}: expected zero or unknown"))),
                };
            }
            if let Some(&v) = line.kv.get("discard") {
                hd.discard = match v {
                    "zeroes" => DiscardMode::Zeroes,
                    "undefined" => DiscardMode::Undefined,
                    _ => return Err(line.err(format!("discard={v}: expected zeroes or undefined"))),
                };
            }
            h = Some(History::new(hd));
            continue;
        };
        line.flags = line.words.split_off(1.min(line.words.len()));
        let verb = line.words.first().copied().unwrap_or("");
        match verb {
            "inv" => {
                let id_s = line
                    .flags
                    .first()
                    .copied()
                    .ok_or_else(|| line.err("inv: missing id"))?;
                let id = parse_num(id_s).ok_or_else(|| line.err(format!("bad id {id_s:?}")))?;
                let kind_s = line
                    .flags
                    .get(1)
                    .copied()
                    .ok_or_else(|| line.err("inv: missing op"))?;
                let kind = kind_of(kind_s).ok_or_else(|| {
                    line.err(format!(
                        "unknown op {kind_s:?} (write, read, flush, discard, wzeroes)"
                    ))
                })?;
                if line.flags.len() > 2 {
                    return Err(line.err(format!("unexpected word {:?}", line.flags[2])));
                }
                let (offset, len) = if kind.has_range() {
                    line.only(&["t", "ch", "tid", "off", "len", "d"], true)?;
                    let len = line.num("len")?;
                    if len > MAX_REQUEST as u64 {
                        return Err(line.err(format!("len={len}: more than 1 MiB")));
                    }
                    (line.num("off")?, len as u32)
                } else {
                    line.only(&["t", "ch", "tid"], true)?;
                    (0, 0)
                };
                let written = if kind == OpKind::Write {
                    line.digests("d")?
                } else {
                    if line.kv.contains_key("d") {
                        return Err(line.err("only a write carries d= at invocation"));
                    }
                    Vec::new()
                };
                let chan = u16::try_from(line.num("ch")?).map_err(|_| line.err("ch= too large"))?;
                if index.contains_key(&id) {
                    return Err(line.err(format!("op #{id} invoked twice")));
                }
                index.insert(id, hist.ops.len());
                hist.ops.push(Op {
                    id,
                    chan,
                    tid: line.num("tid")?,
                    kind,
                    offset,
                    len,
                    written,
                    read: Vec::new(),
                    invoke: line.num("t")?,
                    complete: None,
                    durable: false,
                });
            }
            "ret" => {
                let id_s = line
                    .flags
                    .first()
                    .copied()
                    .ok_or_else(|| line.err("ret: missing id"))?;
                let id = parse_num(id_s).ok_or_else(|| line.err(format!("bad id {id_s:?}")))?;
                let rest = &line.flags[1..];
                if let Some(w) = rest.iter().find(|w| !matches!(**w, "ok" | "durable")) {
                    return Err(line.err(format!("unexpected word {w:?}")));
                }
                line.only(&["t", "err", "d"], true)?;
                let ok = rest.contains(&"ok");
                let outcome = match (ok, line.kv.get("err")) {
                    (true, None) => Outcome::Ok,
                    (false, Some(e)) => Outcome::Err(
                        e.parse()
                            .map_err(|_| line.err(format!("err={e}: not an errno")))?,
                    ),
                    _ => return Err(line.err("ret needs exactly one of ok / err=ERRNO")),
                };
                let &at = index
                    .get(&id)
                    .ok_or_else(|| line.err(format!("ret of op #{id} before its inv")))?;
                let op = &mut hist.ops[at];
                if op.complete.is_some() {
                    return Err(line.err(format!("op #{id} completed twice")));
                }
                if line.kv.contains_key("d") {
                    if op.kind != OpKind::Read || outcome != Outcome::Ok {
                        return Err(line.err("only a read that completed ok carries d="));
                    }
                    op.read = line.digests("d")?;
                }
                op.complete = Some((line.num("t")?, outcome));
                op.durable = rest.contains(&"durable");
            }
            "watermark" | "confirm" => {
                line.only(&["t", "ch", "tid"], false)?;
                let chan = u16::try_from(line.num("ch")?).map_err(|_| line.err("ch= too large"))?;
                let (t, tid) = (line.num("t")?, line.num("tid")?);
                if verb == "watermark" {
                    hist.watermarks.push(Watermark { t, chan, tid });
                } else {
                    hist.confirms.push(Confirm { t, chan, tid });
                }
            }
            "crash" => {
                line.only(&["t"], false)?;
                hist.crashes.push(Crash {
                    t: line.num("t")?,
                    media: Vec::new(),
                });
            }
            "media" => {
                line.only(&["off", "d"], false)?;
                let m = MediaRange {
                    offset: line.num("off")?,
                    digests: line.digests("d")?,
                };
                hist.crashes
                    .last_mut()
                    .ok_or_else(|| line.err("media before any crash"))?
                    .media
                    .push(m);
            }
            _ => {
                return Err(line.err(format!(
                    "unknown line {verb:?} (inv, ret, watermark, confirm, crash, media)"
                )));
            }
        }
    }
    let h = h.ok_or_else(|| HistoryError::new("empty input: no header line"))?;
    h.validate()?;
    Ok(h)
}
