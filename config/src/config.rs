//! The configuration model: every setting, its default, how it is written as text, and the
//! validation that both the proxy and the manager use before a config version is applied.

mod errors;
mod groups;
mod peers;
mod routing;
mod settings;
mod validation;
mod values;

pub use errors::*;
pub use groups::*;
pub use peers::*;
pub use routing::*;
pub use settings::*;
pub use values::*;
