//! A config written as TOML (`config export`) and read back (`config import`), with the
//! line, column and key of what cannot be read.

use super::ImportError;
use crate::config::{Config, ConfigErrors, ConfigFile};

/// Where a TOML file cannot be read as a config.
fn fault(text: &str, error: &toml::de::Error, key: Option<String>) -> ImportError {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| line_and_column(text, span.start));
    ImportError {
        line,
        column: Some(column),
        key,
        message: error.message().to_owned(),
    }
}

/// The line and column, counted from 1 (the column in characters), of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Why a TOML file cannot be imported as a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigFileError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error(transparent)]
    Unreadable(#[from] ImportError),
    /// The file reads, but the config it makes breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

impl Config {
    /// Reads a whole config from TOML (as `config export` writes it), then validates it; what
    /// the file leaves out takes its default.
    pub fn from_toml(text: &str) -> Result<Config, ConfigFileError> {
        Config::default().merged_toml(text)
    }

    /// This config with the settings of a TOML file laid over it, then validated: settings
    /// the file leaves out keep their values, and `peers` and `parent_rules` are replaced only
    /// when the file holds them.
    pub fn merged_toml(&self, text: &str) -> Result<Config, ConfigFileError> {
        let config = read_config_file(text)?.laid_over(self.clone());
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

fn read_config_file(text: &str) -> Result<ConfigFile, ImportError> {
    let document = toml::Deserializer::parse(text).map_err(|e| fault(text, &e, None))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        // The path is "." when the fault is in the document itself, such as an unknown key.
        let key = Some(e.path().to_string()).filter(|path| path != ".");
        fault(text, e.inner(), key)
    })
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests;
