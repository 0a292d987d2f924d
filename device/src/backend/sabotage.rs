//! Deliberate protocol violations, **only** for the adversary's negative tests.
//!
//! The switches are public (and settable in `BackendConfig::sabotage`) only with the
//! crate feature `sabotage`, which the tests enable through their dev-dependency and
//! the kernel never does; without it the engine sees [`Sabotage::NONE`], a constant.
//!
//! Each switch removes one rule of the non-coherent mode (docs/protocol.md §4) or
//! one promise of the consistency model; `docs/adversary.md` lists the negative test
//! that catches each one and what the adversarial memory says went wrong.

/// One rule of the non-coherent mode the backend breaks on purpose
/// (`docs/adversary.md`, "Negative tests").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sabotage {
    /// Rule 2, writer side: do not write back a CE after storing it. The CE stays in
    /// the device's cache; the host sees `compr_head` move but never the CE.
    pub skip_ce_write_back: bool,
    /// Rule 3, reader side: do not invalidate SE lines before (re-)reading them. The
    /// device keeps reading the copy it cached with the previous SE of that line.
    pub skip_se_invalidate: bool,
    /// Rule 4: accept SEs and payloads without checking se_crc / data_crc.
    pub skip_crc_check: bool,
    /// Rule 2, ordering: publish `compr_head` without the store fence that orders the
    /// CE write-backs before it; the new `compr_head` may land before its CEs.
    pub skip_compr_head_fence: bool,
    /// Rule 2, publication order: post the CE of a READ and publish `compr_head`, and
    /// only then write back the READ payload (as if the device were preempted).
    pub publish_before_read_payload_write_back: bool,
    /// Rule 1: keep the device line inside the host's cache line.
    pub shared_ctrl_line: bool,
    /// Swap the last two CEs a channel posted in one poll before publishing
    /// `compr_head`: the channel completes out of submission order
    /// (the history checker names `channel-order`).
    pub swap_completions: bool,
    /// Publish the durable watermark as everything executed, before the write-back
    /// and media flush: a crash then loses writes already confirmed durable
    /// (the history checker names `lost-durable`).
    pub early_watermark: bool,
    /// Interleave two overlapping writes inside their blocks: a WRITE that overlaps a
    /// WRITE of another channel executed earlier in the same poll (both still in
    /// flight: no CE of this poll is seen before it returns) writes only the even
    /// sectors of the overlap, leaving the other write's data in the odd ones. Every
    /// block of the overlap then holds sectors of two writes that both cover them (the
    /// history checker names `torn-block`).
    pub torn_block: bool,
}

impl Sabotage {
    /// Every rule kept (production behaviour).
    pub const NONE: Self = Self {
        skip_ce_write_back: false,
        skip_se_invalidate: false,
        skip_crc_check: false,
        skip_compr_head_fence: false,
        publish_before_read_payload_write_back: false,
        shared_ctrl_line: false,
        swap_completions: false,
        early_watermark: false,
        torn_block: false,
    };
}
