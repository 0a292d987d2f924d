//! CPUID feature report and the cache-line instructions it gates.

use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};

#[allow(unused_unsafe)]
fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    // SAFETY: CPUID is available on every x86_64 CPU and has no side effects.
    unsafe { __cpuid_count(leaf, sub) }
}

/// CPU facts the device depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFeatures {
    pub vendor: [u8; 12],
    pub clflush: bool,
    /// CLFLUSH line size in bytes (CPUID.1:EBX[15:8] × 8).
    pub clflush_line: u32,
    pub clflushopt: bool,
    pub clwb: bool,
    pub invariant_tsc: bool,
    pub hypervisor: bool,
    pub max_leaf: u32,
}

impl CpuFeatures {
    pub fn detect() -> Self {
        #[allow(unused_unsafe)]
        // SAFETY: see `cpuid`.
        let l0 = unsafe { __cpuid(0) };
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
        vendor[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
        let l1 = cpuid(1, 0);
        let l7 = if l0.eax >= 7 {
            cpuid(7, 0)
        } else {
            CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0,
                edx: 0,
            }
        };
        let ext_max = cpuid(0x8000_0000, 0).eax;
        let inv_tsc = ext_max >= 0x8000_0007 && cpuid(0x8000_0007, 0).edx & (1 << 8) != 0;
        CpuFeatures {
            vendor,
            clflush: l1.edx & (1 << 19) != 0,
            clflush_line: ((l1.ebx >> 8) & 0xff) * 8,
            clflushopt: l7.ebx & (1 << 23) != 0,
            clwb: l7.ebx & (1 << 24) != 0,
            invariant_tsc: inv_tsc,
            hypervisor: l1.ecx & (1 << 31) != 0,
            max_leaf: l0.eax,
        }
    }

    pub fn vendor_str(&self) -> &str {
        core::str::from_utf8(&self.vendor).unwrap_or("?")
    }

    /// Log the report.
    pub fn report(&self) {
        log::info!(
            "cpu: vendor={} clflush={} (line {} B) clflushopt={} clwb={} invariant_tsc={} hypervisor={}",
            self.vendor_str(),
            yn(self.clflush),
            self.clflush_line,
            yn(self.clflushopt),
            yn(self.clwb),
            yn(self.invariant_tsc),
            yn(self.hypervisor)
        );
    }
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

static FEATURES: spin::Once<CpuFeatures> = spin::Once::new();

/// Detected features (detected once, on first use).
pub fn features() -> &'static CpuFeatures {
    FEATURES.call_once(CpuFeatures::detect)
}
