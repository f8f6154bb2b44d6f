//! The shipped systemd unit stays hardened: `systemd-analyze security`
//! (offline) rates its exposure at most 1.5 of 10, and it is a unit
//! systemd can parse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/systemd/autoencrypt-milter.service"
);

#[test]
fn unit_exposure_is_low() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=15", UNIT])
        .output()
        .expect("systemd-analyze (package systemd) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 1.5:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[test]
fn unit_has_what_the_milter_needs() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "RuntimeDirectory=autoencrypt-milter",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "User=autoencrypt-milter",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
}
