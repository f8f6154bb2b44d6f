//! `encrypt` (stub).
use std::process::ExitCode;
/// Arguments.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {}
/// Run.
pub fn run(_a: &EncryptArgs) -> ExitCode { ExitCode::from(1) }
