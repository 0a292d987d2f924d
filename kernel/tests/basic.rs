//! Platform bring-up checks, each a case in one boot.
#![no_std]
// A test binary's own platform glue: the static that hands the platform to the cases.
#![allow(unsafe_code)]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use kernel::memory::{MapKind, map_mmio};

entry_point!(main, config = &kernel::BOOTLOADER_CONFIG);

static mut PLATFORM: Option<kernel::Platform> = None;

fn platform() -> &'static kernel::Platform {
    let p: *const Option<kernel::Platform> = &raw const PLATFORM;
    // SAFETY: written once in `main` before any test runs; single-threaded kernel,
    // and no mutable reference exists afterwards.
    unsafe { (*p).as_ref().expect("platform initialised") }
}

fn main(boot_info: &'static mut BootInfo) -> ! {
    let p = kernel::init(boot_info);
    // SAFETY: single-threaded, before any reader.
    unsafe { PLATFORM = Some(p) };
    kernel::testing::run(
        "basic",
        kernel::tests![
            memory_map_has_usable_ram,
            breakpoint_free_cpu_features,
            tsc_is_calibrated_and_wall_clock_is_sane,
            acpi_has_madt_and_mcfg,
            pci_finds_q35_host_bridge,
            map_mmio_uncached_reads_lapic_version,
            map_mmio_rejects_zero_length,
            fw_cfg_is_present,
        ],
    )
}

fn memory_map_has_usable_ram() {
    let m = &platform().memory;
    assert!(
        m.usable_bytes > 64 << 20,
        "only {} bytes usable",
        m.usable_bytes
    );
    assert!(m.regions > 1);
}

fn breakpoint_free_cpu_features() {
    let f = kernel::arch::cpu::features();
    assert!(f.clflush, "CLFLUSH is architectural on x86_64");
    assert_eq!(f.clflush_line, 64);
}

fn tsc_is_calibrated_and_wall_clock_is_sane() {
    let hz = kernel::arch::time::tsc_hz();
    assert!(hz > 10_000_000, "TSC {hz} Hz");
    let t0 = kernel::arch::time::wall_clock_ns();
    // After 2020-01-01 and monotonic.
    assert!(t0 > 1_577_836_800 * 1_000_000_000, "wall clock {t0}");
    kernel::arch::time::delay_us(1000);
    let t1 = kernel::arch::time::wall_clock_ns();
    assert!(
        t1 >= t0 + 900_000,
        "1 ms delay advanced the clock by {} ns",
        t1 - t0
    );
}

fn acpi_has_madt_and_mcfg() {
    let a = platform().acpi.as_ref().expect("ACPI present");
    let e = a.ecams();
    assert_eq!(e.len(), 1, "q35 has one ECAM window");
    assert_eq!(e[0].base, 0xb000_0000);
}

fn pci_finds_q35_host_bridge() {
    assert!(platform().pci_functions >= 3);
    let hb = kernel::pci::find(0x8086, 0x29c0).expect("q35 host bridge 8086:29c0");
    assert_eq!((hb.f.bus, hb.f.dev, hb.class), (0, 0, 0x06));
}

fn map_mmio_uncached_reads_lapic_version() {
    let m = map_mmio(0xfee0_0000, 4096, MapKind::Uncached).expect("map LAPIC");
    assert_eq!(m.virt & 0xfff, 0);
    let mmio = kernel::mmio::Mmio::map(0xfee0_0000, 4096).expect("map LAPIC again");
    let ver = mmio.read32(0x30) & 0xff;
    assert!(ver >= 0x10, "LAPIC version {ver:#x}");
    // Out-of-range reads are all-ones, not faults.
    assert_eq!(mmio.read32(4096), u32::MAX);
}

fn map_mmio_rejects_zero_length() {
    assert!(map_mmio(0xfee0_0000, 0, MapKind::Uncached).is_err());
}

fn fw_cfg_is_present() {
    assert!(kernel::fwcfg::present());
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kernel::testing::test_panic(info)
}
