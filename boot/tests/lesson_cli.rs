//! `cargo run -- lesson`: the list (exit 0), an unknown name (a clear error listing the
//! lessons, exit 2), one lesson run (exit 0 when it ran as designed). No VM.

use std::process::Command;

fn boot(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_boot"))
        .args(args)
        .output()
        .expect("run boot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lesson_alone_lists_the_lessons() {
    let (code, out, err) = boot(&["lesson"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), lessons::all().len() + 1, "{out}");
    for l in lessons::all() {
        assert!(out.contains(l.name) && out.contains(l.title), "{out}");
    }
}

#[test]
fn an_unknown_lesson_is_a_clear_error() {
    let (code, out, err) = boot(&["lesson", "no-such-lesson"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("no lesson called \"no-such-lesson\""), "{err}");
    for l in lessons::all() {
        assert!(err.contains(l.name), "{err}");
    }
}

#[test]
fn a_lesson_runs_and_exits_0() {
    let (code, out, err) = boot(&["lesson", "corrupted-ce"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("1. BROKEN") && out.contains("2. FIXED"),
        "{out}"
    );
    assert!(out.contains("ran as designed"), "{out}");
    let (code, out, err) = boot(&["lesson", "dropped-invalidate", "--quiet", "--seed", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("protocol trace"),
        "quiet shows no trace: {out}"
    );
}
