//! Structured protocol trace. Every protocol step of both engines emits one
//! [`TraceEvent`]; the kernel prints them (see [`LogTracer`]), tests record and
//! assert on them.

/// Which object a record write or heartbeat concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Transport,
    Host,
    Backend,
    Blkdev,
    Segment,
    MgmtCmd,
    MgmtRet,
}

/// Which ring pointer was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointer {
    SubmrHead,
    SubmrTail,
    ComprHead,
    ComprTail,
    /// Non-coherent mode: the whole host/device control line.
    HostLine,
    DevLine,
}

/// Direction of a payload copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyDir {
    /// From the shared data area into private memory.
    FromShared,
    /// From private memory into the shared data area.
    ToShared,
}

/// Why an entry, record or payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    SeCrc,
    DataCrc,
    CeCrc,
    /// req_tid is not the expected one (stale or out-of-sequence entry).
    Tid,
    BadOp,
    BadRange,
    BadDataArea,
    /// Bounded re-read exhausted: the entry never became valid.
    StaleAfterRetries,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// An SE was read (copied) at ring offset `pos`.
    SeSeen {
        chan: u32,
        pos: u32,
        req_tid: u64,
        op: u32,
        flags: u32,
    },
    /// An SE marked DONE was skipped (re-attach).
    SeSkipped {
        chan: u32,
        pos: u32,
        req_tid: u64,
    },
    /// An entry or payload failed validation.
    Rejected {
        chan: u32,
        pos: u32,
        why: Reject,
    },
    /// Payload copied between the data area (`data_off`, relative) and private memory.
    DataCopied {
        chan: u32,
        dir: CopyDir,
        data_off: u32,
        len: u32,
    },
    /// A media operation was executed.
    MediaOp {
        chan: u32,
        op: u32,
        offset: u64,
        len: u32,
        result: i32,
    },
    /// A CE was written at ring offset `pos`.
    CePosted {
        chan: u32,
        pos: u32,
        req_tid: u64,
        result: i32,
    },
    /// A CE was consumed by the host.
    CeConsumed {
        chan: u32,
        pos: u32,
        req_tid: u64,
        result: i32,
    },
    /// An SE was written by the host.
    SePosted {
        chan: u32,
        pos: u32,
        req_tid: u64,
        op: u32,
    },
    /// A ring pointer was published (release store or line write-back).
    PointerPublished {
        chan: u32,
        which: Pointer,
        value: u32,
    },
    /// Cache lines written back / invalidated (absolute region offsets).
    WrittenBack {
        off: u64,
        len: u64,
    },
    Invalidated {
        off: u64,
        len: u64,
    },
    /// A two-copy record was written into copy `copy` with meta seq `seq`.
    RecordWritten {
        kind: RecordKind,
        id: u32,
        copy: u8,
        seq: u8,
    },
    /// A record was cleared (both copies zeroed).
    RecordCleared {
        kind: RecordKind,
        id: u32,
    },
    /// Heartbeat (record rewritten with a new alive_ts).
    Heartbeat {
        kind: RecordKind,
        id: u32,
        alive_ts: u64,
    },
    /// Management command seen / answered (v3 RESET or non-coherent epoch bump).
    MgmtCommand {
        chan: u32,
        cmd_seq: u32,
        op: u8,
    },
    MgmtAnswered {
        chan: u32,
        cmd_seq: u32,
        ret: u8,
    },
    /// Channel provisioned for a backend handler.
    ChannelProvisioned {
        chan: u32,
        seg_id: u32,
    },
    /// Backend resumed a channel after a crash at `cursor`.
    Reattached {
        chan: u32,
        cursor: u32,
    },
}

/// A sink for trace events. Must be cheap; called on every protocol step.
pub trait Tracer: Sync {
    fn event(&self, ev: &TraceEvent);
}

/// Drops every event.
pub struct NoTrace;
impl Tracer for NoTrace {
    fn event(&self, _: &TraceEvent) {}
}

/// Forwards every event to `log::trace!` (what the kernel prints).
pub struct LogTracer;
impl Tracer for LogTracer {
    fn event(&self, ev: &TraceEvent) {
        log::trace!("cbd: {ev:?}");
    }
}
