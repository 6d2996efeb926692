//! A config's errors: each wrong field with its key, value and what was expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One wrong field: which setting, the value given, and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{key} = {value:?}: {message}")]
pub struct FieldError {
    pub key: String,
    pub value: String,
    pub message: String,
}

impl FieldError {
    pub fn new(key: &str, value: impl fmt::Display, message: impl Into<String>) -> Self {
        FieldError {
            key: key.to_owned(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

/// Every error found in a config, so a form can show each beside its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}
