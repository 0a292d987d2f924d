//! The block pattern and the verifier: every 512-byte sector of a block names its
//! (block, version); a disk is checked block by block against the versions the host
//! saw confirmed durable and the newest it submitted.

use crate::NBLOCKS;
use crate::common::Rng;

pub const BLOCK: usize = 4096;
pub const SECT: usize = 512;
pub const MAGIC: u32 = 0xC4A5_B10C;

/// The content of `block` at `version` (version 0 = the zeroed fresh image). Every
/// 512-byte sector starts with (magic, block, version, sector) and is filled from a
/// generator seeded by all three, so a mix of versions never equals any version.
pub fn block_content(block: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    if version == 0 {
        return b;
    }
    for (s, sect) in b.chunks_mut(SECT).enumerate() {
        sect[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        sect[4..8].copy_from_slice(&(block as u32).to_le_bytes());
        sect[8..16].copy_from_slice(&version.to_le_bytes());
        sect[16..20].copy_from_slice(&(s as u32).to_le_bytes());
        let mut r = Rng((block << 40) ^ (version << 8) ^ s as u64 ^ 0x9E37_79B9_7F4A_7C15 | 1);
        for c in sect[20..].chunks_mut(8) {
            let v = r.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    b
}

/// (block, version) a sector claims to be, `Some((_, 0))` if all zero.
pub fn sector_id(sect: &[u8]) -> Option<(u64, u64)> {
    if sect.iter().all(|&x| x == 0) {
        return Some((0, 0));
    }
    if u32::from_le_bytes(sect[0..4].try_into().unwrap()) != MAGIC {
        return None;
    }
    Some((
        u32::from_le_bytes(sect[4..8].try_into().unwrap()) as u64,
        u64::from_le_bytes(sect[8..16].try_into().unwrap()),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Not one whole version: the sectors' (block, version), None = garbage.
    Torn {
        block: u64,
        sectors: Vec<Option<(u64, u64)>>,
    },
    /// A whole version, but of another block.
    Misplaced { block: u64, found: u64 },
    /// Older than the newest version confirmed durable.
    Older {
        block: u64,
        found: u64,
        confirmed: u64,
    },
    /// Newer than anything submitted.
    Unknown {
        block: u64,
        found: u64,
        submitted: u64,
    },
}

/// Check one block: `Ok(version)` if it is one whole version in `floor..=last`.
pub fn check_block(block: u64, data: &[u8], floor: u64, last: u64) -> Result<u64, Violation> {
    let first = sector_id(&data[..SECT]);
    let whole = match first {
        Some((b, v)) if v == 0 || b == block => {
            (data == block_content(block, v).as_slice()).then_some(v)
        }
        Some((b, v)) => {
            if data == block_content(b, v).as_slice() {
                return Err(Violation::Misplaced { block, found: b });
            }
            None
        }
        None => None,
    };
    let Some(v) = whole else {
        return Err(Violation::Torn {
            block,
            sectors: data.chunks(SECT).map(sector_id).collect(),
        });
    };
    if v < floor {
        return Err(Violation::Older {
            block,
            found: v,
            confirmed: floor,
        });
    }
    if v > last {
        return Err(Violation::Unknown {
            block,
            found: v,
            submitted: last,
        });
    }
    Ok(v)
}

/// Check a whole disk: the version of every block, and every violation.
pub fn verify(disk: &[u8], floor: &[u64], last: &[u64]) -> (Vec<u64>, Vec<Violation>) {
    let mut vers = Vec::with_capacity(floor.len());
    let mut bad = Vec::new();
    for (i, data) in disk.chunks(BLOCK).enumerate() {
        match check_block(i as u64, data, floor[i], last[i]) {
            Ok(v) => vers.push(v),
            Err(e) => {
                vers.push(u64::MAX);
                bad.push(e);
            }
        }
    }
    (vers, bad)
}

/// The verifier must see a torn block and a roll-back behind the confirmed version
/// in a copy of `disk` (a valid image under `floor`/`last`).
pub fn assert_verifier_catches(disk: &[u8], floor: &[u64], last: &[u64], rng: &mut Rng) {
    let mut bad = disk.to_vec();
    // Torn: sector 1..8 of a random block from another version of it.
    let b = rng.below(NBLOCKS as u64) as usize;
    let s = 1 + rng.below(7) as usize;
    let cur = sector_id(&disk[b * BLOCK..][..SECT]).map_or(0, |x| x.1);
    let other = block_content(b as u64, cur + 1);
    bad[b * BLOCK + s * SECT..][..SECT].copy_from_slice(&other[s * SECT..][..SECT]);
    // Rolled back: a block with a confirmed version > 0 holds the version before.
    let rb = (0..NBLOCKS)
        .map(|i| (i + rng.below(NBLOCKS as u64) as usize) % NBLOCKS)
        .find(|&i| i != b && floor[i] > 0);
    if let Some(r) = rb {
        bad[r * BLOCK..][..BLOCK].copy_from_slice(&block_content(r as u64, floor[r] - 1));
    }
    let (_, v) = verify(&bad, floor, last);
    assert!(
        v.iter()
            .any(|x| matches!(x, Violation::Torn { block, .. } if *block == b as u64)),
        "verifier missed a torn block {b} (sector {s}): {v:?}"
    );
    if let Some(r) = rb {
        assert!(
            v.iter()
                .any(|x| matches!(x, Violation::Older { block, .. } if *block == r as u64)),
            "verifier missed block {r} rolled back behind its confirmed version: {v:?}"
        );
    }
    assert_eq!(v.len(), 1 + rb.is_some() as usize, "{v:?}");
}

/// The verifier on its own (no VM): it accepts valid images and reports torn,
/// misplaced, rolled-back and unknown blocks.
#[test]
pub fn crash_verifier_reports_violations() {
    let n = 16;
    let floor: Vec<u64> = (0..n).map(|i| (i % 3) as u64).collect();
    let last: Vec<u64> = (0..n).map(|i| (i % 3) as u64 + 2).collect();
    let mut disk = Vec::new();
    for (i, f) in floor.iter().enumerate() {
        disk.extend(block_content(i as u64, f + (i % 2) as u64));
    }
    let (vers, v) = verify(&disk, &floor, &last);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(vers[5], floor[5] + 1);
    // Two versions mixed inside one block, at every sector boundary.
    for s in 1..8 {
        let mut d = disk.clone();
        d[3 * BLOCK + s * SECT..4 * BLOCK].copy_from_slice(&block_content(3, 3)[s * SECT..]);
        let (_, v) = verify(&d, &floor, &last);
        assert!(
            matches!(&v[..], [Violation::Torn { block: 3, .. }]),
            "{v:?}"
        );
    }
    // Half old zeroes, half new data.
    let mut d = disk.clone();
    d[2 * BLOCK..2 * BLOCK + 2048].fill(0);
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Torn { block: 2, .. }]),
        "{v:?}"
    );
    // One flipped byte.
    let mut d = disk.clone();
    d[7 * BLOCK + 1000] ^= 1;
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Torn { block: 7, .. }]),
        "{v:?}"
    );
    // Another block's content.
    let mut d = disk.clone();
    d[4 * BLOCK..5 * BLOCK].copy_from_slice(&block_content(9, 1));
    let (_, v) = verify(&d, &floor, &last);
    assert!(
        matches!(&v[..], [Violation::Misplaced { block: 4, found: 9 }]),
        "{v:?}"
    );
    // Older than confirmed (block 2: confirmed 2, holds 1) and never submitted.
    let mut d = disk.clone();
    d[2 * BLOCK..3 * BLOCK].copy_from_slice(&block_content(2, 1));
    d[5 * BLOCK..6 * BLOCK].copy_from_slice(&block_content(5, 9));
    let (_, v) = verify(&d, &floor, &last);
    assert_eq!(
        v,
        vec![
            Violation::Older {
                block: 2,
                found: 1,
                confirmed: 2
            },
            Violation::Unknown {
                block: 5,
                found: 9,
                submitted: 4
            }
        ]
    );
    let mut rng = Rng(7);
    for _ in 0..20 {
        // NBLOCKS-sized image for the in-run self-check.
        let floor: Vec<u64> = (0..NBLOCKS).map(|i| (i % 4) as u64).collect();
        let last: Vec<u64> = floor.iter().map(|f| f + 1).collect();
        let disk: Vec<u8> = (0..NBLOCKS)
            .flat_map(|i| block_content(i as u64, floor[i]))
            .collect();
        assert!(verify(&disk, &floor, &last).1.is_empty());
        assert_verifier_catches(&disk, &floor, &last, &mut rng);
    }
}
