//! `icpgate run`.

use std::path::Path;

/// Serve until shut down; returns the process exit code.
pub fn main(config: &Path) -> i32 {
    match crate::config::Config::load(config) {
        Ok(_) => {
            eprintln!("icpgate run: the data path is not built yet");
            2
        }
        Err(e) => {
            eprintln!("icpgate run: {e}");
            2
        }
    }
}
