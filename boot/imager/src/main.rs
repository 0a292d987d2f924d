//! `imager <bios|uefi> <kernel-elf> <out.img>`: wrap a kernel ELF into a bootable disk image.
use bootloader::{BiosBoot, BootConfig, UefiBoot};
use bootloader_boot_config::LevelFilter;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, elf, out] = args.as_slice() else {
        eprintln!("usage: imager <bios|uefi> <kernel-elf> <out.img>");
        return ExitCode::from(2);
    };
    let elf = PathBuf::from(elf);
    let out = PathBuf::from(out);
    if !elf.is_file() {
        eprintln!("imager: kernel ELF {} does not exist", elf.display());
        return ExitCode::from(2);
    }
    let mut cfg = BootConfig::default();
    cfg.frame_buffer_logging = false;
    cfg.serial_logging = true;
    cfg.log_level = LevelFilter::Warn;
    let result = match kind.as_str() {
        "bios" => BiosBoot::new(&elf).set_boot_config(&cfg).create_disk_image(&out),
        "uefi" => UefiBoot::new(&elf).set_boot_config(&cfg).create_disk_image(&out),
        other => {
            eprintln!("imager: unknown image kind {other:?} (expected bios or uefi)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imager: creating {} failed: {e:#}", out.display());
            ExitCode::FAILURE
        }
    }
}
