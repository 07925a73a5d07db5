//! Helpers shared by all error types.

use std::error::Error;
use std::fmt::Write;

/// An error with all its sources, joined by ": " (each message names only
/// its own layer, so the chain reads as one sentence).
pub fn chain(error: &dyn Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(out, ": {e}");
        source = e.source();
    }
    out
}
