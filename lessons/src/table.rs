//! The lessons, one entry each. A new lesson is one more entry: its switch (a field of
//! `Sabotage` / `HostSabotage`), which harness runs it ([`Kind`]) and how its broken
//! run must fail, the words, the seed it comes from and the docs page. The lessons
//! still to wire are listed in docs/lessons.md ("Lessons to come").

use crate::adversarial::{Faults, Scenario};
use crate::{Kind, Lesson, Source};
use device::backend::Sabotage;
use history::Rule;
use host::engine::HostSabotage;

const PRICE: &str = "the Gregory Price seed";
const PRICE_FILE: &str = "cxl-coherence-gregory-price.txt";
const DSM: &str = "the distributed-shared-memory notes seed";
const DSM_FILE: &str = "distributed-shared-memory-notes.md";
const SURVEY: &str = "the consistency-model survey seed";
const SURVEY_FILE: &str = "consistency-models-wikipedia-ru.txt";

fn dev(s: Sabotage) -> Faults {
    Faults {
        dev: s,
        ..Faults::default()
    }
}

/// Every lesson, in the order `cargo run -- lesson` lists them.
pub fn all() -> Vec<Lesson> {
    vec![
        Lesson {
            name: "dropped-write-back",
            title: "the device posts completions but never writes them back",
            rule: "Writer: store, write back, fence, then publish. A store sits in the writer's \
                   private cache until it is written back; the reader never sees it otherwise.",
            broken: "device Sabotage::skip_ce_write_back: the backend writes each CE and \
                     publishes compr_head, but never writes the CE's line back.",
            verdict: "the host saw compr_head move past the CE, but the CE slot in memory still \
                      holds old bytes, so its CRC and tid never verify. The host re-reads it a \
                      bounded number of times, then gives up (HostError::Stale): the completion \
                      exists only in the device's cache.",
            look: "the device's `posted CE` is followed by the fence and the DEVICE line's write-back \
                   that publishes compr_head, but by no `write-back … CE ring` (with the rule kept \
                   the CE's line is written back right before `posted CE`). The host re-reads the \
                   CE slot until its budget is spent.",
            docs: "docs/protocol.md §4 rule 2; docs/adversary.md",
            test: "host/tests/adversary.rs catches_missing_ce_write_back",
            source: Source {
                name: PRICE,
                file: PRICE_FILE,
                quote: "after the writer writes data, if we don't have a mechanism to flush and \
                        invalidate puncturing all caches, how can the readonly reader access \
                        the new data?",
                gloss: "Dongsheng Yang's question, quoted in Gregory Price's reply; Price: \
                        \"This is exactly right\"",
            },
            seed: 0,
            kind: Kind::Adversarial {
                scenario: Scenario::default(),
                faults: dev(Sabotage {
                    skip_ce_write_back: true,
                    ..Sabotage::NONE
                }),
                catch: &["Stale", "no progress"],
            },
        },
        Lesson {
            name: "missing-fence",
            title: "the device publishes compr_head without fencing its CE's write-back",
            rule: "Writer: store, write back, fence, then publish. Write-backs are not ordered \
                   against each other until a fence: without one, the index's line may reach \
                   memory before the entry it publishes.",
            broken: "device Sabotage::skip_compr_head_fence: the backend writes each CE back, \
                     then writes the DEVICE line with the new compr_head back with no store \
                     fence between the two write-backs.",
            verdict: "the write-back of compr_head overtook the CE's (legal without a fence: \
                      lines reach memory in any order). The host saw compr_head move past a \
                      slot that still held old bytes; the CE's CRC and tid never verify within \
                      the host's bounded re-reads, and it gives up (HostError::Stale).",
            look: "the device's `write-back … CE ring` and the DEVICE line's write-back follow \
                   each other with no `store fence` between them (with the rule kept there is \
                   one); the host's re-reads of the CE slot, then `Stale`.",
            docs: "docs/protocol.md §4 rule 2; docs/adversary.md",
            test: "host/tests/adversary.rs catches_missing_store_fence_before_compr_head",
            source: Source {
                name: SURVEY,
                file: SURVEY_FILE,
                quote: "Порядок программы между двумя операциями записи поддерживается PSO с \
                        помощью явной инструкции STBAR.",
                gloss: "program order between two writes is kept (in SPARC's partial store \
                        order) only by an explicit STBAR, the store barrier",
            },
            seed: 0,
            kind: Kind::Adversarial {
                // Write-backs that take their time, so that one can be overtaken.
                scenario: Scenario {
                    requests: 40,
                    memory: |m| m.max_delay = 400,
                    ..Scenario::default()
                },
                faults: dev(Sabotage {
                    skip_compr_head_fence: true,
                    ..Sabotage::NONE
                }),
                catch: &["Stale"],
            },
        },
        Lesson {
            name: "dropped-invalidate",
            title: "the device reads submission entries from its stale cache",
            rule: "Reader: invalidate, load, copy to private memory, validate. A line cached \
                   earlier stays stale until the reader drops it.",
            broken: "device Sabotage::skip_se_invalidate: the backend (re-)reads SE lines \
                     without invalidating them first.",
            verdict: "an SE is 48 bytes, so it shares a 64-byte line with its neighbour. When \
                      the device read one SE, its cache also took the first bytes of the next \
                      slot, still empty. The host then wrote the next SE there, but the device \
                      keeps hitting its cached copy: every re-read gives the same stale \
                      half-entry whose CRC fails, and after the bounded re-reads the backend \
                      reports BackendError::Stale.",
            look: "the device's `REJECTED … SE CRC` at the new SE's slot repeats with no \
                   `invalidate … SE ring` before the re-reads (with the rule kept every SE read is \
                   preceded by one), until `never became valid`.",
            docs: "docs/protocol.md §4 rule 3; docs/adversary.md",
            test: "host/tests/adversary.rs catches_missing_se_invalidate",
            source: Source {
                name: DSM,
                file: DSM_FILE,
                quote: "R/W first hits the cache",
                gloss: "and a hit is served from the cache, whatever memory holds now",
            },
            seed: 0,
            kind: Kind::Adversarial {
                scenario: Scenario::default(),
                faults: dev(Sabotage {
                    skip_se_invalidate: true,
                    ..Sabotage::NONE
                }),
                catch: &["Stale", "no progress"],
            },
        },
        Lesson {
            name: "index-before-payload",
            title: "the host publishes a WRITE before its payload is written back",
            rule: "Writer order: the payload and the entry first, stored and written back, then \
                   the index that publishes them. Nothing orders lines across the link, so an \
                   index written back first can land first.",
            broken: "host HostSabotage::publish_before_payload_write_back: the host publishes \
                     submr_head and writes the payload back only at its next submission (as if \
                     preempted between the two).",
            verdict: "the device saw the new SE and fetched its payload, but the payload's lines \
                      were still only in the host's cache: data_crc does not verify. The device \
                      re-reads within its budget, spread over polls; the host does not come back \
                      in time, and the WRITE completes with -EIO (-5).",
            look: "the host's `copied … into … data` is followed by `write-back … SE ring` and \
                   `posted SE`, with no `write-back … data area` of the payload between (the fixed \
                   host has one). The device reads the SE and copies the payload out again and again \
                   (its CRC fails) until it posts the CE with -EIO.",
            docs: "docs/protocol.md §4 rule 2; docs/adversary.md",
            test: "host/tests/adversary.rs catches_index_published_before_payload_write_back",
            source: Source {
                name: PRICE,
                file: PRICE_FILE,
                quote: "2) Writer calculates and records a checksum of that data into memory \
                        3) Writer invalidates everything 4) Reader maps the memory",
                gloss: "data and checksum first, flushed; only then is the reader let in",
            },
            seed: 0,
            kind: Kind::Adversarial {
                scenario: Scenario {
                    long_bursts: 300,
                    memory: |m| m.evict_per_mille = 0,
                    ..Scenario::default()
                },
                faults: Faults {
                    host: HostSabotage {
                        publish_before_payload_write_back: true,
                        ..HostSabotage::default()
                    },
                    ..Faults::default()
                },
                catch: &["failed with -5", "wrong data", "media differs"],
            },
        },
        Lesson {
            name: "shared-line",
            title: "host and device write the same cache line",
            rule: "One writer per line: the host never stores to device lines nor the device to \
                   host lines. CBD v3 keeps both sides' ring pointers in one line; the \
                   non-coherent mode gives each side a line of its own.",
            broken: "device Sabotage::shared_ctrl_line and host HostSabotage::shared_ctrl_line: \
                     the device's control line sits in the second half of the host's (as v3's \
                     pointers do).",
            verdict: "write-back is by whole 64-byte line. Host and device both hold dirty \
                      copies of the same line, and whichever lands last overwrites the other's \
                      update: the memory reports two dirty copies of one line, or the \
                      clobbered bytes when a write-back lands.",
            look: "the device writes back `chan N HOST line`: in this layout its own control line is \
                   the second half of the host's line, which the host writes back too. The memory \
                   flags the line as soon as both sides hold it dirty, or a write-back lands over \
                   the other side's bytes.",
            docs: "docs/protocol.md §4 rule 1 (and §3: v3's control struct); docs/adversary.md",
            test: "host/tests/adversary.rs catches_host_and_device_sharing_a_line",
            source: Source {
                name: DSM,
                file: DSM_FILE,
                quote: "False sharing - different processes have variables on the same page, \
                        causing much flip-flopping",
                gloss: "",
            },
            seed: 0,
            kind: Kind::Adversarial {
                scenario: Scenario::default(),
                faults: Faults {
                    dev: Sabotage {
                        shared_ctrl_line: true,
                        ..Sabotage::NONE
                    },
                    host: HostSabotage {
                        shared_ctrl_line: true,
                        ..HostSabotage::default()
                    },
                },
                catch: &["both have dirty data", "lost update"],
            },
        },
        Lesson {
            name: "skipped-crc",
            title: "the device trusts entries and payloads without checking their CRCs",
            rule: "Nothing orders lines across the link, so every entry carries its req_tid and \
                   a CRC, every payload a data_crc, and a reader that sees a stale or torn one \
                   re-reads it.",
            broken: "device Sabotage::skip_crc_check: the backend accepts SEs and payloads \
                     without checking se_crc / data_crc; and, so that there is something to \
                     catch, host HostSabotage::skip_submr_head_fence: the host publishes \
                     submr_head without the store fence after the payload's write-back. With \
                     every fence in place an entry or payload always lands before its index, so \
                     a CRC check never fails in a correct run: it is the second line of defence \
                     against a writer's ordering bug.",
            verdict: "without the fence the index landed before the payload it publishes \
                      (write-backs land in any order until a fence). The device, no longer \
                      checking data_crc, wrote whatever \
                      the data area held, old bytes, to the media and completed the WRITE ok. \
                      A later READ returns the old data, or the media differs from what the \
                      host wrote.",
            look: "the WRITE's own lines: the device reads its SE, copies the payload out and writes \
                   it to the media with no `REJECTED … payload CRC`, although the host's write-back \
                   of the payload had not landed yet; the READ of those bytes returns the old data.",
            docs: "docs/protocol.md §4 rule 4; docs/adversary.md",
            test: "host/tests/adversary.rs catches_skipped_crc_check",
            source: Source {
                name: PRICE,
                file: PRICE_FILE,
                quote: "regardless of the scheme you come up with, you will end up with a system \
                        where the data must be inspected and validated before it can be used.",
                gloss: "",
            },
            seed: 0,
            kind: Kind::Adversarial {
                scenario: Scenario::default(),
                faults: Faults {
                    dev: Sabotage {
                        skip_crc_check: true,
                        ..Sabotage::NONE
                    },
                    host: HostSabotage {
                        skip_submr_head_fence: true,
                        ..HostSabotage::default()
                    },
                },
                catch: &["wrong data", "media differs"],
            },
        },
        Lesson {
            name: "corrupted-ce",
            title: "a completion entry is corrupted on the link and nothing checks it",
            rule: "Every CE carries a CRC (ce_crc) that the host verifies before it believes \
                   the CE; a CE that does not verify is re-read, never taken.",
            broken: "a v3 transport formatted without CHANNEL_CRC (16-byte CEs, nothing to \
                     verify), then one bit of a posted CE's `result` flips in shared memory \
                     (injected by hand, coherent memory, deterministic).",
            verdict: "the device completed the WRITE with result 0; one flipped bit made it 1, \
                      and without a CRC the host cannot tell: it takes the CE and reports a \
                      failure the device never sent (another bit could as well turn an error \
                      into success). With ce_crc the host refuses the CE, re-reads it, reports \
                      HostError::Stale and takes it once it is intact.",
            look: "the link flips the bit between the device's `posted CE … ok` and the host's \
                   `took CE … 1`: the host takes a result the device never posted.",
            docs: "docs/protocol.md §3 (entry formats) and §4 rule 4; docs/adversary.md",
            test: "host/tests/adversary.rs host_rejects_a_ce_whose_crc_does_not_verify",
            source: Source {
                name: PRICE,
                file: PRICE_FILE,
                quote: "5) Reader reads the checksum and calculates the checksum of the data \
                        a) if the checksums match, the data is coherent b) if they don't, we \
                        must wait longer for the queues to flush",
                gloss: "",
            },
            seed: 0,
            kind: Kind::CorruptedCe,
        },
        Lesson {
            name: "swapped-completions",
            title: "a channel completes requests out of submission order",
            rule: "Per channel, requests take effect and complete in submission order (FIFO, \
                   PRAM consistency); across channels there is no order.",
            broken: "device Sabotage::swap_completions: the backend swaps the last two CEs it \
                     posted on a channel in one poll, before publishing compr_head.",
            verdict: "two requests of one channel completed in the opposite order to their \
                      submission. No data has to be wrong for this to be a bug: a host that \
                      relies on the channel's FIFO order sees the later request done before the \
                      earlier one. The checker names the rule (channel-order) and the two \
                      operations.",
            look: "the device executes and posts the two CEs in submission order (`posted CE` \
                   of the earlier tid at the lower slot), then swaps them before publishing \
                   compr_head: the host takes the later tid from the lower slot first.",
            docs: "docs/consistency.md §1 (per channel), §4, §6",
            test: "host/tests/histories.rs checker_catches_swapped_completions",
            source: Source {
                name: "the consistency-model survey seed",
                file: "consistency-models-wikipedia-ru.txt",
                quote: "При согласованности PRAM все процессы просматривают операции одного \
                        процесса в том же порядке, в котором они были выполнены этим процессом",
                gloss: "under PRAM consistency all processes see one process's operations in \
                        the order that process performed them",
            },
            seed: 0,
            kind: Kind::Recorded {
                scenario: crate::recorded::Scenario::default(),
                sabotage: Sabotage {
                    swap_completions: true,
                    ..Sabotage::NONE
                },
                rule: Rule::ChannelOrder,
            },
        },
        Lesson {
            name: "early-watermark",
            title: "the device confirms durability before the media flush",
            rule: "Completion is not durability: a write is confirmed durable (DURABLE CE, the \
                   channel's watermark, a completed FLUSH) only once the media's write and \
                   flush completed.",
            broken: "device Sabotage::early_watermark: the backend publishes the durable \
                     watermark as everything executed, before write-back and media flush; then \
                     the backend crashes.",
            verdict: "the host read the watermark and counted the write as on the media; the \
                      crash lost it (CrashMedia keeps, per block, the flushed content or any \
                      version written since). After the crash the media holds an older version \
                      of a block whose write had been confirmed durable: lost-durable.",
            look: "`host learnt: … watermark is now …` passes the write's tid although the media has \
                   not been flushed; then the CRASH: the media image does not hold the write, and \
                   the checker finds its block older than the confirmed write.",
            docs: "docs/durability.md §1-2; docs/consistency.md §3, §6",
            test: "host/tests/histories.rs checker_catches_early_durable_watermark",
            source: Source {
                name: "the asynchronous-durability RFC seed",
                file: "async-durability-notification-rfc.txt",
                quote: "When the data is physically committed to non-volatile media, the device \
                        emits an asynchronous durability confirmation referencing that token.",
                gloss: "",
            },
            seed: 0,
            kind: Kind::Recorded {
                scenario: crate::recorded::Scenario {
                    crash_at: Some(60),
                    ..crate::recorded::Scenario::default()
                },
                sabotage: Sabotage {
                    early_watermark: true,
                    ..Sabotage::NONE
                },
                rule: Rule::LostDurable,
            },
        },
        Lesson {
            name: "torn-overlapping-write",
            title: "two overlapping writes are mixed inside one block",
            rule: "Per block atomicity: a write takes effect on a 4 KiB block whole. Two \
                   overlapping writes may land in either order, but never mixed inside one \
                   block, and a read sees each block all of one write.",
            broken: "device Sabotage::torn_block: a WRITE that overlaps a WRITE of another \
                     channel executed earlier in the same poll writes only the even sectors \
                     of the overlap, leaving the other write's data in the odd ones.",
            verdict: "the two channels wrote the same block concurrently; either order is \
                      legal, but the device interleaved them sector by sector. A later read \
                      of the block (one racing the writes, or the final read-back of the hot \
                      region) returns sectors of both writes, each of which covered the whole range: no order \
                      of the two writes explains that block. The checker names torn-block and \
                      the two writes.",
            look: "the two WRITEs' lines: the device reads both SEs and copies both payloads \
                   out in one poll (one channel's, then the other's), writes both to the media \
                   and posts both CEs ok; the READ that follows returns, within one block, \
                   sectors of each.",
            docs: "docs/consistency.md §1 (per block atomicity), §2, §6",
            test: "host/tests/histories.rs checker_catches_torn_blocks",
            source: Source {
                name: "the Linus seed",
                file: "write-atomicity-linus.txt",
                quote: "at least you wouldn't get overlapping writes where the write data \
                        would be mixed up",
                gloss: "Kent Overstreet, quoted there, on what it would be otherwise: \
                        \"part of write a, then write b, then the rest of write a overlaying \
                        part of write b\"",
            },
            seed: 0,
            kind: Kind::Recorded {
                scenario: crate::recorded::Scenario {
                    read_back: true,
                    ..crate::recorded::Scenario::default()
                },
                sabotage: Sabotage {
                    torn_block: true,
                    ..Sabotage::NONE
                },
                rule: Rule::TornBlock,
            },
        },
    ]
}
