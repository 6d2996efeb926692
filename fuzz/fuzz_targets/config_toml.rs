//! Fuzzes the TOML import (`canopy config import`): no input may panic, and a config it
//! accepts, exported again, imports as the same config.
#![no_main]

use canopy_config::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::from_toml(text) {
        let exported = config.to_toml();
        assert_eq!(
            Config::from_toml(&exported).as_ref(),
            Ok(&config),
            "exported as {exported:?}"
        );
    }
});
