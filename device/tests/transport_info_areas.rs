//! The area checks of `TransportInfo::validate` (an untrusted transport info from
//! shared memory): the four areas must follow the 80-byte transport info and each
//! other without overlap, fit the region and be page aligned. Each rule is broken on
//! its own, at its limit, on the info `format` writes for a 4-segment region; the
//! limits are worked out here from the slot sizes (two 4 KiB copies per record slot,
//! 16 MiB segments, docs/protocol.md §1), not asked of the code under test.

use device::layout::*;

const KIB: u64 = 1024;
const SLOT: u64 = 8 * KIB;
const SEG: u64 = 16 * KIB * KIB;

/// Sets one area offset of a transport info.
type Setter = fn(&mut TransportInfo, u64);

fn valid() -> (TransportInfo, u64) {
    let region = TransportInfo::region_for(4);
    let t = TransportInfo::for_size(region, 0).expect("a 4-segment region formats");
    t.validate(region).expect("format's own info is valid");
    (t, region)
}

#[test]
fn each_area_must_follow_the_previous_one() {
    let (t, region) = valid();
    let h_end = t.host_area_off + SLOT * t.host_num as u64;
    let b_end = t.backend_area_off + SLOT * t.backend_num as u64;
    let d_end = t.blkdev_area_off + SLOT * t.blkdev_num as u64;
    // Host area over the transport info itself (0), or one page short of where
    // the next area may start: both refused.
    let cases: [(&str, Setter, u64); 4] = [
        ("host area over the info", |t, v| t.host_area_off = v, 0),
        (
            "backend over hosts",
            |t, v| t.backend_area_off = v,
            h_end - 4 * KIB,
        ),
        (
            "blkdev over backends",
            |t, v| t.blkdev_area_off = v,
            b_end - 4 * KIB,
        ),
        (
            "segments over blkdevs",
            |t, v| t.segment_area_off = v,
            d_end - 4 * KIB,
        ),
    ];
    for (what, set, v) in cases {
        let mut bad = t;
        set(&mut bad, v);
        assert_eq!(
            bad.validate(region),
            Err("areas overlap or exceed the region"),
            "{what} ({v:#x})"
        );
    }
}

#[test]
fn the_segments_must_fit_the_region_and_areas_be_page_aligned() {
    let (t, region) = valid();
    let s_end = t.segment_area_off + SEG * t.segment_num as u64;
    assert!(s_end <= region);
    assert!(
        t.validate(s_end).is_ok(),
        "a region that ends with the last segment"
    );
    let overlap = Err("areas overlap or exceed the region");
    assert_eq!(
        t.validate(s_end - 1),
        overlap,
        "the last segment past the region's end"
    );
    let mut more = t;
    more.segment_num += ((region - s_end) / SEG) as u32 + 1;
    assert_eq!(more.validate(region), overlap, "one segment more than fits");
    // The segment area moved by half a sector: no overlap (it only moves away from
    // the blkdev area, and the region grows with it), only the alignment is wrong.
    let mut bad = t;
    bad.segment_area_off += 512;
    assert_eq!(bad.validate(region + 512), Err("areas not page aligned"));
}

/// Without MULTIHOST a transport has exactly one host slot, so the backend area
/// starts one slot after the host area; with it, one host slot per segment up to 16.
#[test]
fn the_host_area_holds_one_slot_unless_multihost() {
    let region = TransportInfo::region_for(4);
    let one = TransportInfo::for_size(region, 0).unwrap();
    assert_eq!(one.host_num, 1);
    assert_eq!(one.backend_area_off, one.host_area_off + SLOT);
    let multi = TransportInfo::for_size(region, tflags::MULTIHOST).unwrap();
    assert_eq!(multi.host_num, 4);
    assert_eq!(multi.backend_area_off, multi.host_area_off + 4 * SLOT);
}
