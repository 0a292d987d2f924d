//! The cache key of an image: a stable hash of every input.

use super::TOOL_VERSION;
use super::apt::Pkg;

/// FNV-1a 64: stable across toolchains (unlike `DefaultHasher`); collisions don't matter here.
#[derive(Clone, Copy)]
struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn feed(&mut self, b: &[u8]) {
        for &c in b.iter().chain(&(b.len() as u64).to_le_bytes()) {
            self.0 ^= c as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The cache key of an image: tool version, `init`, `modules`, and the root package versions.
pub fn cache_key(roots: &[Pkg], init: &[u8], modules: &[u8]) -> String {
    let mut h = Fnv::new();
    h.feed(TOOL_VERSION.as_bytes());
    h.feed(init);
    h.feed(modules);
    for p in roots {
        h.feed(p.id().as_bytes());
    }
    // A second, differently seeded pass widens the key to 128 bits.
    let mut h2 = Fnv(h.0 ^ 0x9e37_79b9_7f4a_7c15);
    h2.feed(TOOL_VERSION.as_bytes());
    for p in roots {
        h2.feed(p.name.as_bytes());
    }
    format!("{:016x}{:016x}", h.0, h2.0)
}

/// The cache key of a tools layer: tool version and the resolved packages.
pub fn tools_key(pkgs: &[Pkg]) -> String {
    let mut h = Fnv::new();
    h.feed(TOOL_VERSION.as_bytes());
    for p in pkgs {
        h.feed(p.id().as_bytes());
    }
    format!("{:016x}", h.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::apt::Pkg;

    #[test]
    fn key_changes_with_inputs() {
        let p = |v: &str| Pkg {
            name: "fio".into(),
            version: v.into(),
            depends: vec![],
        };
        let a = cache_key(&[p("1")], b"init", b"m");
        assert_eq!(a, cache_key(&[p("1")], b"init", b"m"));
        assert_ne!(a, cache_key(&[p("2")], b"init", b"m"));
        assert_ne!(a, cache_key(&[p("1")], b"init2", b"m"));
        assert_ne!(a, cache_key(&[p("1")], b"init", b"m2"));
    }
}
