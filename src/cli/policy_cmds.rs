//! `check-config` and `policy explain` (issue 4: not built yet).

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show which rule matches a recipient and what the engine decides.
    Explain {
        /// Recipient address.
        #[arg(long)]
        to: String,
    },
}

/// `check-config`.
pub fn check_config(_config: &Path) -> ExitCode {
    super::fail(1, "check-config is not built yet")
}

/// `policy ...`.
pub fn run(_config: &Path, _cmd: &PolicyCommand) -> ExitCode {
    super::fail(1, "policy explain is not built yet")
}
