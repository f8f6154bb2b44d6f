//! The `autoencrypt-milter` binary: everything lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    autoencrypt_milter::cli::run()
}
