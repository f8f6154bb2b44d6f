//! Configuration: the typed [`Config`], and its loading in three layers —
//! built-in defaults, then the TOML file given by `--config`, then
//! `AUTOENCRYPT_<SECTION>__<KEY>` environment variables (figment).
//!
//! This module owns every configuration key, its type and its validation,
//! and the attribution of a value to where it came from: every error names
//! the file and line (or the environment variable) and the key. figment
//! forgets spans, so the file is first parsed with the `toml` crate, which
//! keeps them; figment then does the layering.
//!
//! The policy rules are not configuration in this sense: they live in
//! `policy_dir` and are read by [`crate::policy`].
//!
//! The rooms, one concept each (all reached through the re-exports here):
//!
//! | file | owns |
//! |---|---|
//! | `model.rs` | the typed keys ([`Config`] and its sections), defaults, [`KEYS`], per-key checks |
//! | `ldap.rs` | `[[ldap]]`: the LDAP directories, how to reach and bind to each, their checks |
//! | `store.rs` | `[store]`, `[harvest]` and `authserv_id`: the key store and learning keys from mail |
//! | `web.rs` | `[wkd]` and `[keyserver]`: the web sources and the limits of every HTTPS fetch |
//! | `signing.rs` | `[signing]` and `[verify]`: signing keys, the login map, size bounds |
//! | `socket.rs` | [`Socket`]: the `inet:`/`inet6:`/`unix:` specification |
//! | `forms.rs` | how values are written (serde adapters: strings, `""` for none, lists) |
//! | `load.rs` | the figment layers (defaults, file, environment), [`FileRequirement`], [`LoadedConfig`] |
//! | `position.rs` | the TOML position index: key path or byte offset → file:line |
//! | `error.rs` | [`ConfigError`] and the [`Location`] it names |

mod error;
mod forms;
mod ldap;
mod load;
mod model;
mod position;
mod signing;
mod socket;
mod store;
mod web;

pub use error::{ConfigError, Location};
pub use ldap::{LdapConfig, LdapScheme};
pub use load::{DEFAULT_CONFIG, ENV_PREFIX, FileRequirement, LoadedConfig};
pub use model::{
    Config, DEFAULT_POLICY_DIR, DnsConfig, DnsMode, KEYS, KeysConfig, LimitsConfig, LogFormat,
    LogLevel, SmimeConfig,
};
pub(crate) use position::TomlIndex;
pub use signing::{SigningConfig, VerifyConfig};
pub use socket::{Socket, SocketError};
pub use store::{DEFAULT_STATE_DIR, DEFAULT_STORE_FILE, HarvestConfig, StoreConfig};
pub use web::{KeyserverConfig, WkdConfig};
