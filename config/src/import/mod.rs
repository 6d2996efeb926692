//! Files read into settings: a config exported as TOML, Squid `cache_peer` lines, Traffic
//! Server `icp.config` and `parent.config`. What Canopy has no use for is listed as ignored,
//! with its line; a line that cannot be read refuses the whole file, with every such line.

pub mod config_file;
pub mod parent_config;
pub mod peer_import;

use std::fmt;

/// What cannot be imported from one place of a file: its line (from 1), its column (from 1,
/// in characters) where the reader knows it, the key at fault when the fault is in a value,
/// and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    pub line: usize,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl ImportError {
    /// A whole line that cannot be imported.
    fn at_line(line: usize, message: String) -> ImportError {
        ImportError {
            line,
            column: None,
            key: None,
            message,
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(column) = self.column {
            write!(f, ", column {column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}
