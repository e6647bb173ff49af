//! Floe's configuration: `connector.toml` plus `FLOE_<SECTION>__<KEY>` environment overrides.
//!
//! Loading happens in three steps, each with its own failure mode:
//! 1. the file is read and parsed as TOML (syntax errors carry line and column);
//! 2. environment overrides are merged into that tree ([`env`]);
//! 3. the tree is deserialized into [`raw::RawConfig`] (unknown keys and wrong types are errors
//!    naming the key) and [`raw::RawConfig::validate`] turns it into [`Config`], checking rules
//!    that span several keys.
//!
//! This module never talks to Kafka, S3 or a catalog; `floe check` does that.

mod env;
mod raw;
mod secret;
mod validated;

use std::path::{Path, PathBuf};

pub use env::ENV_PREFIX;
pub use raw::RawConfig;
pub use secret::Secret;
pub use validated::*;

/// Why a configuration could not be loaded. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn with_origin(self, origin: &str) -> Self {
        match self {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message,
            },
            other => other,
        }
    }
}

/// Loads, merges environment overrides from the process environment, and validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, std::env::vars())
}

/// Like [`load`], from a string and an explicit set of environment variables (tests use this).
pub fn load_str(
    text: &str,
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut tree: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
    let overridden = env::apply_overrides(&mut tree, vars)?;
    let origin = if overridden.is_empty() {
        path.display().to_string()
    } else {
        format!(
            "{} (with overrides from {})",
            path.display(),
            overridden.join(", ")
        )
    };
    let raw = RawConfig::from_table(tree).map_err(|e| e.with_origin(&origin))?;
    raw.validate().map_err(|e| e.with_origin(&origin))
}

#[cfg(test)]
mod tests;
