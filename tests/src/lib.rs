//! Paired-VM tests live in `tests/tests/`; the guest-side scripts in `tests/scripts/`.
//! The pairing machinery itself is `boot::pair` (shared with the demo and the bench).

/// The text of `tests/scripts/NAME.sh`.
pub fn script(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(format!("{name}.sh"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
