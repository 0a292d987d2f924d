//! [`Log`]: a history written out in the text format while it happens, for a
//! long-running program (cbd-host) that should not keep it in memory.

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::*;
use crate::text::{header_line, inv_line, push_digests, ret_line};

/// Streams events to `out`, one line each, from any number of threads. The rules of
/// [`Recorder`] apply: stamp an invocation ([`Log::tick`]) *before* the request can take
/// effect, record its completion after it was seen. Lines are not in time order (an
/// invocation is written after its submission, with the earlier stamp); [`crate::parse`]
/// does not need them to be, only an operation's `inv` before its `ret` — which holds
/// when the thread that submits a request writes its `inv` before it, or any thread,
/// can see the completion.
///
/// Write errors are counted, not returned: the first is logged and the log stops
/// writing (a half-written history would be rejected as invalid, not misjudged).
pub struct Log<W: Write + Send> {
    clock: AtomicU64,
    next_id: AtomicU64,
    out: Mutex<(W, bool)>,
}

impl<W: Write + Send> Log<W> {
    /// Writes the header line.
    pub fn new(mut out: W, header: Header) -> io::Result<Self> {
        out.write_all(header_line(&header).as_bytes())?;
        Ok(Log {
            clock: AtomicU64::new(1),
            next_id: AtomicU64::new(0),
            out: Mutex::new((out, true)),
        })
    }

    /// The next logical timestamp.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn line(&self, s: &str) {
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if !g.1 {
            return;
        }
        let r =
            g.0.write_all(s.as_bytes())
                .and_then(|()| g.0.write_all(b"\n"));
        if let Err(e) = r {
            log::error!("history: writing the log failed ({e}); the log stops here");
            g.1 = false;
        }
    }

    /// A request stamped `invoke` (from [`Log::tick`], taken before it was submitted)
    /// was submitted as `tid` on `chan`. `written`: a WRITE's sector digests.
    #[allow(clippy::too_many_arguments)]
    pub fn invoke(
        &self,
        invoke: u64,
        chan: u16,
        tid: u64,
        kind: OpKind,
        offset: u64,
        len: u32,
        written: Vec<Digest>,
    ) -> OpId {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let op = Op {
            id,
            chan,
            tid,
            kind,
            offset,
            len,
            written,
            read: Vec::new(),
            invoke,
            complete: None,
            durable: false,
        };
        self.line(&inv_line(&op));
        id
    }

    /// The completion of `id` (a `kind` request) was seen; `read`: what a READ that
    /// completed ok returned, as sector digests.
    pub fn complete(
        &self,
        id: OpId,
        kind: OpKind,
        outcome: Outcome,
        read: Vec<Digest>,
        durable: bool,
    ) {
        let t = self.tick();
        let op = Op {
            id,
            chan: 0,
            tid: 0,
            kind,
            offset: 0,
            len: 0,
            written: Vec::new(),
            read,
            invoke: 0,
            complete: Some((t, outcome)),
            durable,
        };
        if let Some(s) = ret_line(&op) {
            self.line(&s);
        }
    }

    /// The host saw the durable watermark of `chan` at `tid` (exclusive).
    pub fn watermark(&self, chan: u16, tid: u64) {
        let t = self.tick();
        self.line(&format!("watermark t={t} ch={chan} tid={tid}"));
    }

    /// The host saw token `tid` of `chan` confirmed durable.
    pub fn confirm(&self, chan: u16, tid: u64) {
        let t = self.tick();
        self.line(&format!("confirm t={t} ch={chan} tid={tid}"));
    }

    /// The device died (before anything of its next incarnation is recorded), with the
    /// media read back afterwards, if known. Returns the crash's time.
    pub fn crash(&self, media: &[MediaRange]) -> u64 {
        let t = self.tick();
        let mut s = format!("crash t={t}");
        for m in media {
            s.push_str(&format!("\nmedia off={:#x} d=", m.offset));
            push_digests(&mut s, &m.digests);
        }
        self.line(&s);
        t
    }

    /// Flushes the writer.
    pub fn flush(&self) -> io::Result<()> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).0.flush()
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events out of time order, from a log, parse into the history they describe
    /// and check.
    #[test]
    fn a_log_parses_back() {
        let log = Log::new(Vec::new(), Header::default()).unwrap();
        let data = vec![7u8; 4096];
        let t0 = log.tick();
        let t1 = log.tick();
        // submitted in the order t1, t0: lines out of time order
        let b = log.invoke(t1, 1, 0, OpKind::Read, 0, 4096, Vec::new());
        let a = log.invoke(t0, 0, 5, OpKind::Write, 0, 4096, digests(&data));
        log.complete(a, OpKind::Write, Outcome::Ok, Vec::new(), false);
        log.watermark(0, 6);
        log.complete(b, OpKind::Read, Outcome::Ok, digests(&data), false);
        log.crash(&[MediaRange {
            offset: 0,
            digests: digests(&data),
        }]);
        let text = String::from_utf8(log.into_inner()).unwrap();
        let h = crate::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(h.ops.len(), 2);
        assert_eq!(h.op(a).unwrap().invoke, t0);
        assert_eq!(h.op(b).unwrap().read, digests(&data));
        assert_eq!(h.watermarks.len(), 1);
        assert_eq!(h.crashes[0].media[0].digests.len(), 8);
        crate::check(&h).unwrap();
    }
}
