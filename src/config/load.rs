//! Loading: the figment layers — built-in defaults, then the TOML file
//! given by `--config`, then `AUTOENCRYPT_<SECTION>__<KEY>` environment
//! variables — with [`FileRequirement`] deciding whether a missing file is
//! an error, and every error attributed to a file and line (through the
//! position index) or to the environment variable that set the value.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::{ConfigError, Location};
use super::model::{Config, KEYS};
use super::position::TomlIndex;

/// Default configuration file (also the default of `--config`).
pub const DEFAULT_CONFIG: &str = "/etc/autoencrypt-milter/autoencrypt-milter.toml";

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "AUTOENCRYPT_";

/// A loaded configuration with the origin of every value.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// The configuration file that was read, if one existed.
    pub file: Option<PathBuf>,
    /// Where each key of [`KEYS`] came from.
    pub origins: BTreeMap<String, Location>,
}

/// Whether the configuration file must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRequirement {
    /// Absent is fine (the default path: built-in defaults apply).
    Optional,
    /// Absent is an error (a path the administrator named).
    Required,
}

impl FileRequirement {
    /// `Optional` for [`DEFAULT_CONFIG`], `Required` for any other path: a
    /// mistyped `--config` must not silently run on defaults.
    pub fn for_path(path: &Path) -> Self {
        if path == Path::new(DEFAULT_CONFIG) {
            FileRequirement::Optional
        } else {
            FileRequirement::Required
        }
    }
}

impl Config {
    /// Loads the configuration from `path` and the process environment.
    pub fn load(path: &Path, req: FileRequirement) -> Result<LoadedConfig, ConfigError> {
        // Non-UTF-8 variables cannot be configuration values; skipping them
        // is right because none of ours can be named that way either.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Self::load_with_env(path, req, env)
    }

    /// Loads the configuration from `path` and the given environment
    /// (only `AUTOENCRYPT_`-prefixed variables are read). Tests pass their
    /// own environment instead of mutating the process's.
    pub fn load_with_env(
        path: &Path,
        req: FileRequirement,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LoadedConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match req {
                FileRequirement::Optional => None,
                FileRequirement::Required => {
                    return Err(ConfigError::NotFound {
                        path: path.to_owned(),
                    });
                }
            },
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };

        // Pass 1: the file alone, with spans, so that syntax errors,
        // unknown keys and bad values get their line.
        let index = match &text {
            Some(t) => {
                let index = TomlIndex::parse(path, t)?;
                if let Err(e) = toml::from_str::<Config>(t) {
                    return Err(index.error(&e));
                }
                Some(index)
            }
            None => None,
        };

        // Pass 2: the layering.
        let mut figment = Figment::new().merge(Serialized::defaults(Config::default()));
        if text.is_some() {
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (var, value) in vars {
            figment = figment.merge(EnvVar::new(var, &value)?);
        }
        let locate = |key: &str| -> Location {
            // `ldap[0].url`: figment knows the array, the index the line.
            let table = key.split('[').next().unwrap_or(key);
            match figment.find_metadata(table) {
                Some(md) => origin_of(md, key, index.as_ref()),
                None => Location::Default,
            }
        };
        let mut config: Config = match figment.extract() {
            Ok(c) => c,
            Err(e) => return Err(figment_error(e, index.as_ref())),
        };

        config.validate(&locate)?;
        let origins: BTreeMap<String, Location> =
            KEYS.iter().map(|k| ((*k).to_owned(), locate(k))).collect();

        // Relative paths written in the file are relative to the file, so
        // that a configuration directory can be moved as a whole.
        if let Some(base) = path.parent() {
            let in_file = |k: &str| matches!(origins.get(k), Some(Location::File { .. }));
            if in_file("policy_dir") && config.policy_dir.is_relative() {
                config.policy_dir = base.join(&config.policy_dir);
            }
            if in_file("keys.directory")
                && let Some(d) = config.keys.directory.as_mut().filter(|d| d.is_relative())
            {
                *d = base.join(&*d);
            }
            for key in ["signing.key_dir", "signing.login_map"] {
                let file = match key {
                    "signing.key_dir" => &mut config.signing.key_dir,
                    _ => &mut config.signing.login_map,
                };
                if in_file(key)
                    && let Some(p) = file.as_mut().filter(|p| p.is_relative())
                {
                    *p = base.join(&*p);
                }
            }
            if in_file("wkd.ca_file")
                && let Some(d) = config.wkd.ca_file.as_mut().filter(|d| d.is_relative())
            {
                *d = base.join(&*d);
            }
            if matches!(locate("ldap"), Location::File { .. }) {
                for dir in &mut config.ldap {
                    for f in [&mut dir.bind_password_file, &mut dir.ca_file] {
                        if let Some(p) = f.as_mut().filter(|p| p.is_relative()) {
                            *p = base.join(&*p);
                        }
                    }
                }
            }
            for key in ["store.password_file", "store.ca_file"] {
                let file = match key {
                    "store.password_file" => &mut config.store.password_file,
                    _ => &mut config.store.ca_file,
                };
                if in_file(key)
                    && let Some(p) = file.as_mut().filter(|p| p.is_relative())
                {
                    *p = base.join(&*p);
                }
            }
            // `sqlite://keys.sqlite` in the file: beside the file.
            if in_file("store.url")
                && let Some(rest) = config.store.url.strip_prefix("sqlite://")
                && !rest.starts_with('/')
            {
                config.store.url = format!("sqlite://{}", base.join(rest).display());
            }
            if in_file("dns.trust_anchor")
                && let Some(d) = config.dns.trust_anchor.as_mut().filter(|d| d.is_relative())
            {
                *d = base.join(&*d);
            }
        }

        Ok(LoadedConfig {
            config,
            file: text.map(|_| path.to_owned()),
            origins,
        })
    }
}

/// Where figment says a key came from.
fn origin_of(md: &Metadata, key: &str, index: Option<&TomlIndex>) -> Location {
    if let Some(path) = md.source.as_ref().and_then(|s| s.file_path()) {
        let line = index.and_then(|i| i.line_of_key(key));
        return Location::File {
            path: path.to_owned(),
            line,
        };
    }
    if let Some(var) = md.name.strip_prefix(ENV_VAR_NAME_PREFIX) {
        return Location::Env {
            var: var.to_owned(),
        };
    }
    Location::Default
}

/// Turns a figment extraction error into one naming file+line or variable.
fn figment_error(e: figment::Error, index: Option<&TomlIndex>) -> ConfigError {
    let mut key = e.path.join(".");
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        key = if key.is_empty() {
            field.clone()
        } else {
            format!("{key}.{field}")
        };
    }
    let location = match &e.metadata {
        Some(md) => origin_of(md, &key, index),
        None => Location::Default,
    };
    ConfigError::Invalid {
        location,
        key: (!key.is_empty()).then_some(key),
        message: e.kind.to_string(),
    }
}

const ENV_VAR_NAME_PREFIX: &str = "environment variable ";

/// One `AUTOENCRYPT_…` variable as a figment provider, so that an error
/// names the variable (figment's own `Env` names only the prefix).
struct EnvVar {
    var: String,
    key: String,
    value: Value,
}

impl EnvVar {
    fn new(var: String, value: &str) -> Result<Self, ConfigError> {
        let rest = &var[ENV_PREFIX.len()..];
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::Invalid {
                location: Location::Env { var },
                key: None,
                message:
                    "not a configuration key (expected AUTOENCRYPT_KEY or AUTOENCRYPT_SECTION__KEY)"
                        .to_owned(),
            });
        }
        // figment reads "3000" as an integer, "true" as a bool and
        // "[a, b]" as an array, as its own Env provider does.
        let value = match value.parse::<Value>() {
            Ok(v) => v,
            Err(never) => match never {},
        };
        Ok(EnvVar { var, key, value })
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_VAR_NAME_PREFIX}{}", self.var))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}
