//! ELF, just enough (read with the `object` crate): interpreter, DT_NEEDED,
//! DT_RUNPATH, a section by name.

use object::elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH};
use object::read::elf::{Dyn, ElfFile64, ProgramHeader, SectionHeader};
use object::{LittleEndian, ObjectSection};

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

/// Is this an ELF64 little-endian file?
pub fn is_elf(b: &[u8]) -> bool {
    b.len() >= 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1
}

fn parse(b: &[u8]) -> Option<ElfFile64<'_, LittleEndian>> {
    if !is_elf(b) {
        return None;
    }
    ElfFile64::parse(b).ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses interpreter and dynamic entries of an ELF64 LE file; `None` if it is not one
/// or its headers do not parse.
pub fn elf_info(b: &[u8]) -> Option<ElfInfo> {
    let file = parse(b)?;
    let e = LittleEndian;
    let mut info = ElfInfo::default();
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph.interpreter(e, b).ok()? {
            info.interp = Some(text(interp));
        }
    }
    let sections = file.elf_section_table();
    for s in sections.iter() {
        // Every SHT_DYNAMIC section, with the string table it links to.
        let Some((entries, link)) = s.dynamic(e, b).ok()? else {
            continue;
        };
        let strings = sections.strings(e, b, link).ok()?;
        for d in entries {
            match d.tag(e) {
                object::elf::DT_NULL => break,
                DT_NEEDED => info.needed.push(text(d.string(e, strings).ok()?)),
                DT_RPATH | DT_RUNPATH => info.runpath.extend(
                    text(d.string(e, strings).ok()?)
                        .split(':')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                ),
                _ => {}
            }
        }
    }
    Some(info)
}

/// The bytes of the named section (e.g. `.modinfo`).
pub fn elf_section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let file = parse(b)?;
    object::Object::section_by_name(&file, name)?.data().ok()
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
        assert_eq!(
            info.interp.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2"),
            "{info:?}"
        );
        assert!(elf_info(b"#!/bin/sh\n").is_none());
        // A section by name: this binary's own .interp holds the interpreter.
        let interp = elf_section(&b, ".interp").expect(".interp section");
        assert_eq!(interp, b"/lib64/ld-linux-x86-64.so.2\0");
        assert!(elf_section(&b, ".no-such-section").is_none());
        assert!(elf_section(b"#!/bin/sh\n", ".interp").is_none());
    }

    #[test]
    fn truncated_elf_is_rejected_not_a_panic() {
        let me = std::env::current_exe().unwrap();
        let b = std::fs::read(me).unwrap();
        for n in [64, 200, 4096] {
            // Headers point past the end: no info, no panic.
            let _ = elf_info(&b[..n]);
            let _ = elf_section(&b[..n], ".modinfo");
        }
    }
}
