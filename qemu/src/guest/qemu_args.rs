//! The Linux guest's base QEMU arguments.

use std::path::Path;

/// Base QEMU arguments for the guest under TCG. `-cpu max,-hypervisor`: with the CPUID hypervisor
/// bit set, Linux refuses to commit a CXL region (no cache invalidation under a hypervisor).
pub fn qemu_args(kernel: &Path, initrd: &Path, append: &str, cxl: bool) -> Vec<String> {
    let machine = if cxl { "q35,cxl=on" } else { "q35" };
    let mut v: Vec<String> = [
        "-M",
        machine,
        "-accel",
        "tcg",
        "-cpu",
        "max,-hypervisor",
        "-m",
        "1G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("-kernel".into());
    v.push(kernel.display().to_string());
    v.push("-initrd".into());
    v.push(initrd.display().to_string());
    v.push("-append".into());
    v.push(format!("console=ttyS0 panic=-1 {append}"));
    v
}
