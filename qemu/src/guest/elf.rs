//! ELF, just enough: interpreter, DT_NEEDED, DT_RUNPATH, a section by name.

/// What the image builder needs to know about an ELF file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// PT_INTERP (e.g. `/lib64/ld-linux-x86-64.so.2`); `None` for static binaries.
    pub interp: Option<String>,
    /// DT_NEEDED sonames.
    pub needed: Vec<String>,
    /// DT_RUNPATH / DT_RPATH entries.
    pub runpath: Vec<String>,
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16at(b: &[u8], off: usize) -> Option<u64> {
    rd::<2>(b, off).map(|x| u16::from_le_bytes(x) as u64)
}
fn u32at(b: &[u8], off: usize) -> Option<u64> {
    rd::<4>(b, off).map(|x| u32::from_le_bytes(x) as u64)
}
fn u64at(b: &[u8], off: usize) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}
fn cstr(b: &[u8], off: usize) -> Option<String> {
    let s = b.get(off..)?;
    let end = s.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Is this an ELF64 little-endian file?
pub fn is_elf(b: &[u8]) -> bool {
    b.len() >= 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1
}

struct Section {
    name_off: u64,
    kind: u64,
    offset: u64,
    size: u64,
    link: u64,
}

fn sections(b: &[u8]) -> Option<Vec<Section>> {
    let shoff = u64at(b, 0x28)? as usize;
    let shentsize = u16at(b, 0x3a)? as usize;
    let shnum = u16at(b, 0x3c)? as usize;
    let mut v = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let s = shoff.checked_add(i.checked_mul(shentsize)?)?;
        v.push(Section {
            name_off: u32at(b, s)?,
            kind: u32at(b, s + 4)?,
            offset: u64at(b, s + 0x18)?,
            size: u64at(b, s + 0x20)?,
            link: u32at(b, s + 0x28)?,
        });
    }
    Some(v)
}

/// Parses interpreter and dynamic entries of an ELF64 LE file.
pub fn elf_info(b: &[u8]) -> Option<ElfInfo> {
    if !is_elf(b) {
        return None;
    }
    let mut info = ElfInfo::default();
    let phoff = u64at(b, 0x20)? as usize;
    let phentsize = u16at(b, 0x36)? as usize;
    let phnum = u16at(b, 0x38)? as usize;
    for i in 0..phnum {
        let p = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32at(b, p)? == 3 {
            // PT_INTERP
            let off = u64at(b, p + 8)? as usize;
            info.interp = Some(cstr(b, off)?);
        }
    }
    let secs = sections(b)?;
    for s in secs.iter().filter(|s| s.kind == 6) {
        // SHT_DYNAMIC; sh_link = its string table
        let strtab = secs.get(s.link as usize)?.offset as usize;
        let mut off = s.offset as usize;
        let end = off.checked_add(s.size as usize)?;
        while off + 16 <= end {
            let tag = u64at(b, off)?;
            let val = u64at(b, off + 8)? as usize;
            match tag {
                0 => break,
                1 => info.needed.push(cstr(b, strtab + val)?),
                15 | 29 => info.runpath.extend(
                    cstr(b, strtab + val)?
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
            off += 16;
        }
    }
    Some(info)
}

/// The bytes of the named section (e.g. `.modinfo`).
pub fn elf_section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf(b) {
        return None;
    }
    let shstrndx = u16at(b, 0x3e)? as usize;
    let secs = sections(b)?;
    let names = secs.get(shstrndx)?.offset as usize;
    let s = secs
        .iter()
        .find(|s| cstr(b, names + s.name_off as usize).as_deref() == Some(name))?;
    b.get(s.offset as usize..(s.offset + s.size) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_of_this_test_binary() {
        let me = std::env::current_exe().unwrap();
        let b = std::fs::read(me).unwrap();
        let info = elf_info(&b).expect("test binary is ELF");
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(elf_info(b"#!/bin/sh\n").is_none());
    }
}
