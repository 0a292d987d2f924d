//! QEMU fw_cfg: how the runner passes run-time options to the device.
//!
//! The runner adds `-fw_cfg name=opt/cbdfw/<key>,string=<value>`; the kernel reads
//! the file directory through the legacy I/O interface (selector 0x510, data 0x511).
//! Keys in use: `log` (level), `mode` (what this boot does), `test` (test filter).

use x86_64::instructions::port::Port;

const SEL: u16 = 0x510;
const DATA: u16 = 0x511;
const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FILE_DIR: u16 = 0x0019;

fn select(key: u16) {
    // SAFETY: fw_cfg selector port; selecting a key has no other effect.
    unsafe { Port::<u16>::new(SEL).write(key) }
}

fn read_bytes(buf: &mut [u8]) {
    let mut p = Port::<u8>::new(DATA);
    for b in buf {
        // SAFETY: fw_cfg data port; reading advances within the selected item.
        *b = unsafe { p.read() };
    }
}

/// Whether QEMU's fw_cfg device is present.
pub fn present() -> bool {
    select(KEY_SIGNATURE);
    let mut sig = [0u8; 4];
    read_bytes(&mut sig);
    &sig == b"QEMU"
}

/// Read the fw_cfg file `name` into `buf`; returns the number of bytes copied.
pub fn read_file(name: &str, buf: &mut [u8]) -> Option<usize> {
    if !present() {
        return None;
    }
    select(KEY_FILE_DIR);
    let mut cnt = [0u8; 4];
    read_bytes(&mut cnt);
    let count = u32::from_be_bytes(cnt).min(4096);
    for _ in 0..count {
        let mut e = [0u8; 64];
        read_bytes(&mut e);
        let size = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize;
        let key = u16::from_be_bytes([e[4], e[5]]);
        let nlen = e[8..].iter().position(|&c| c == 0).unwrap_or(56);
        if &e[8..8 + nlen] == name.as_bytes() {
            select(key);
            let n = size.min(buf.len());
            read_bytes(&mut buf[..n]);
            return Some(n);
        }
    }
    None
}

/// Small fixed-capacity option value.
pub type OptString = heapless::String<128>;

/// Read the string option `opt/cbdfw/<key>` (trailing whitespace trimmed).
pub fn option(key: &str) -> Option<OptString> {
    let mut name: heapless::String<56> = heapless::String::new();
    name.push_str("opt/cbdfw/").ok()?;
    name.push_str(key).ok()?;
    let mut buf = [0u8; 128];
    let n = read_file(&name, &mut buf)?;
    let s = core::str::from_utf8(&buf[..n])
        .ok()?
        .trim_end_matches(['\0', '\n', ' ']);
    let mut out = OptString::new();
    out.push_str(s).ok()?;
    Some(out)
}
