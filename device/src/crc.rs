//! Kernel-style CRC-32 (`crc32_le` in Linux): reflected polynomial 0xEDB88320,
//! caller-supplied seed (CBD always uses 0) and **no final inversion**.
//!
//! Relation to zlib: `crc32(0, d) == !zlib_crc32_update(0xFFFF_FFFF, d)`.
//! Slicing-by-8 tables are built at compile time.

const POLY: u32 = 0xEDB8_8320;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Continue a kernel-style CRC-32 over `data` starting from `crc`.
pub fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// `crc32(0, data)` exactly as CBD v3 computes every record, entry and payload CRC.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let data: [u8; 77] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        for n in 0..data.len() {
            assert_eq!(crc32(&data[..n]), bitwise(0, &data[..n]));
            let (a, b) = data[..n].split_at(n / 3);
            assert_eq!(crc32_update(crc32(a), b), crc32(&data[..n]));
        }
    }
}
