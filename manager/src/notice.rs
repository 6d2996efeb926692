//! The message at the top of a page that says what a form did.

/// A message at the top of a page after Make These Changes.
#[derive(Debug, Clone)]
pub struct Notice {
    /// "ok", "warn" or "error": the colour of the box.
    pub tone: &'static str,
    pub text: String,
}

impl Notice {
    pub fn error(text: impl Into<String>) -> Notice {
        Notice {
            tone: "error",
            text: text.into(),
        }
    }

    /// This notice with `warnings` added; an "ok" notice with any becomes a warning.
    pub(crate) fn warning(mut self, warnings: &[impl std::fmt::Display]) -> Notice {
        for warning in warnings {
            self.text.push_str(&format!(" Warning: {warning}."));
        }
        if self.tone == "ok" && !warnings.is_empty() {
            self.tone = "warn";
        }
        self
    }
}
