//! Replays every committed fuzz input — the seed corpora in
//! `fuzz/corpus/<target>/` and the crash inputs in
//! `fuzz/regressions/<target>/` — through the same target functions the
//! `cargo fuzz` targets call (`autoencrypt_milter::fuzzing`), on stable.
//! A crash found once stays fixed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;

use autoencrypt_milter::fuzzing::TARGETS;

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut n = 0;
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_runs_clean() {
    let n = replay("corpus");
    // Each target has seeds: a missing corpus would make the fuzzer and
    // this test prove nothing.
    for (target, _) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        assert!(
            std::fs::read_dir(&dir)
                .map(|d| d.count() > 0)
                .unwrap_or(false),
            "no seeds for {target} in {}",
            dir.display()
        );
    }
    assert!(n >= TARGETS.len());
}

#[test]
fn every_crash_found_stays_fixed() {
    assert!(replay("regressions") >= 1, "the regression inputs are gone");
}

/// The session seeds reach every end the invariant distinguishes, so the
/// checks in `fuzzing::session` are not vacuous.
#[test]
fn session_seeds_reach_each_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session");
    let run = |name: &str| {
        autoencrypt_milter::fuzzing::session_outcomes(&std::fs::read(dir.join(name)).unwrap())
    };
    assert_eq!(run("plain-required"), ["required:encrypted"]);
    assert_eq!(run("fake-required"), ["required:encrypted"]);
    assert_eq!(run("mixed-required"), ["required:encrypted"]);
    assert_eq!(run("pgpmime-required"), ["required:verified"]);
    assert_eq!(run("smime-required"), ["required:verified"]);
    assert_eq!(run("two-messages"), ["passed", "required:verified"]);
}
