//! `[signing]` and `[verify]`: where the signing keys of local senders and
//! the login map live, and the size bounds of signing and verifying
//! (both hold the whole message in memory).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::forms::opt_path;

/// Default bound of a message signed or verified (10 MiB): both hold the
/// message in memory, on the blocking pool.
pub const DEFAULT_SIGN_BYTES: u64 = 10_485_760;

/// `[signing]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Directory of per-address signing keys (`<address>.pem` certificate
    /// chain and `<address>.key` for S/MIME, `<address>.sec.asc` for
    /// OpenPGP), readable by the milter's user only; `None` (written
    /// `""`) means no signing.
    #[serde(with = "opt_path")]
    pub key_dir: Option<PathBuf>,
    /// File of `login: address, address` lines: which `From:` addresses
    /// an authenticated login may sign as. `None`: a login may sign as the
    /// address it is spelled as, and nothing else.
    #[serde(with = "opt_path")]
    pub login_map: Option<PathBuf>,
    /// Larger messages are not signed (logged and counted; a rule with
    /// `sign_required` refuses them).
    pub max_message_bytes: u64,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            key_dir: None,
            login_map: None,
            max_message_bytes: DEFAULT_SIGN_BYTES,
        }
    }
}

/// `[verify]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Verify the signatures of inbound mail and record the result in an
    /// `Authentication-Results` field under `authserv_id` (which must be
    /// set: without it nothing is verified).
    pub enabled: bool,
    /// Larger messages are not verified (logged and counted).
    pub max_message_bytes: u64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            enabled: true,
            max_message_bytes: DEFAULT_SIGN_BYTES,
        }
    }
}
