//! Fuzzes the Traffic Server `parent.config` importer: no input may panic, and every rule it
//! accepts, written back as a line, reads back as the same rule.
#![no_main]

use canopy_config::import::parent_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(import) = parent_config::parse(text) {
        for rule in import.into_rules() {
            let line = parent_config::line(&rule);
            assert_eq!(
                parent_config::parse(&line).map(parent_config::RuleImport::into_rules),
                Ok(vec![rule.clone()]),
                "written as {line:?}"
            );
        }
    }
});
