//! The control page where docs/protocol.md §3 puts it, written and read by raw region
//! offsets worked out from the document (not from `ChannelGeom`): a host that follows
//! the document rings the doorbell the device hears, and finds the device's
//! `compr_head` and its RESET answer where it looks. Both engines share `ChannelGeom`,
//! so a test that drives them through it cannot see the page move (cargo-mutants
//! found `ChannelGeom::ctrl` mutants no other test killed: docs/mutants.md).

use device::backend::BackendConfig;
use device::layout::*;
use device::meta;
use device::rig::Rig;
use device::shm::SharedMem;

/// docs/protocol.md §3: the control page at +0x2000 of the channel segment, and in it
/// (`ctrl`) mgmt_cmd at 8, mgmt_ret at 40, submr_head 72, submr_tail 76, compr_head 80,
/// compr_tail 84; the completion ring at +0x3000.
const CTRL: u64 = 0x2000;
const MGMT_CMD: u64 = 8;
const MGMT_RET: u64 = 40;
const SUBMR_HEAD: u64 = 72;
const COMPR_HEAD: u64 = 80;
const COMPR_RING: u64 = 0x3000;

#[test]
fn doorbell_completion_and_reset_at_the_documented_offsets() {
    let rig = Rig::new(tflags::CHANNEL_CRC | tflags::CHANNEL_DATA_CRC);
    let mut scratch = Rig::scratch();
    let mut b = rig
        .start_backend(BackendConfig::default(), 1 << 20, &mut scratch, 1)
        .unwrap();
    let base = rig.g.base;
    // A FLUSH (no payload) as SE 0; the doorbell by raw offset.
    let se = Se {
        op: op::FLUSH,
        ..Se::default()
    };
    rig.write_se(0, &se, true);
    rig.mem.store_u32(base + CTRL + SUBMR_HEAD, rig.se_pos(1));
    b.poll(2).unwrap();
    assert_eq!(
        rig.mem.load_u32(base + CTRL + COMPR_HEAD),
        rig.ce_pos(1),
        "compr_head where the document says"
    );
    // The CE at the start of the completion ring (ce_both_crc: tid at 8, result at 16).
    let mut ce = [0u8; 24];
    rig.mem.read(base + COMPR_RING, &mut ce);
    assert_eq!(u64::from_le_bytes(ce[8..16].try_into().unwrap()), 0);
    assert_eq!(i32::from_le_bytes(ce[16..20].try_into().unwrap()), 0);
    // RESET: mgmt_cmd (two 16-byte copies) at +8, answered in mgmt_ret at +40.
    let mut copy = [0u8; 16];
    meta::encode_copy(
        &MgmtCmd {
            cmd_seq: 1,
            cmd_op: MGMT_OP_RESET,
        },
        1,
        &mut copy,
    );
    rig.mem.write(base + CTRL + MGMT_CMD, &copy);
    b.poll(3).unwrap();
    let mut ret = [0u8; 32];
    rig.mem.read(base + CTRL + MGMT_RET, &mut ret);
    let answered = [&ret[..16], &ret[16..]]
        .iter()
        .filter_map(|c| meta::decode_copy::<MgmtRet>(c))
        .any(|(_, r)| r.cmd_seq == 1 && r.cmd_ret == MGMT_RET_OK);
    assert!(answered, "RESET answered in mgmt_ret at +40");
    assert_eq!(
        rig.mem.load_u32(base + CTRL + COMPR_HEAD),
        0,
        "RESET zeroes compr_head"
    );
}
