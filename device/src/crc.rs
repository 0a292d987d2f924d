//! Kernel-style CRC-32 (`crc32_le` in Linux): reflected polynomial 0xEDB88320,
//! caller-supplied seed (CBD always uses 0) and **no final inversion**.
//!
//! Relation to zlib: `crc32(0, d) == !zlib_crc32_update(0xFFFF_FFFF, d)`.
//!
//! The arithmetic is the `crc32fast` crate's (zlib's CRC-32, the same polynomial):
//! with `std` (host tools, `cbd-host`, native tests) it detects PCLMULQDQ at run time
//! and folds 64 bytes per step; in the kernel (no `std`, soft-float target) it uses
//! its portable slicing-by-16 tables. zlib's CRC inverts the state on entry and on
//! exit, so the kernel's variant is `!zlib(!seed, data)`.

/// Continue a kernel-style CRC-32 over `data` starting from `crc`.
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!crc);
    h.update(data);
    !h.finalize()
}

/// `crc32(0, data)` exactly as CBD v3 computes every record, entry and payload CRC.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLY: u32 = 0xEDB8_8320;

    /// The definition, one bit at a time: the oracle the fast routine is checked against.
    fn bitwise(mut crc: u32, d: &[u8]) -> u32 {
        for &b in d {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn zero_seed_no_inversion() {
        // zlib crc32("123456789") = 0xCBF43926; kernel crc32(~0) without final xor = !that.
        assert_eq!(crc32_update(0xFFFF_FFFF, b"123456789"), !0xCBF4_3926);
        assert_eq!(crc32(&[0u8; 4092]), 0, "all-zero slot must have crc 0");
        // Long enough for the folding path (≥ 64 bytes per step, several steps), with
        // every length and split point up to it.
        let data: [u8; 777] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        for n in 0..data.len() {
            assert_eq!(crc32(&data[..n]), bitwise(0, &data[..n]));
            let (a, b) = data[..n].split_at(n / 3);
            assert_eq!(crc32_update(crc32(a), b), crc32(&data[..n]));
        }
    }
}
