//! How commands talk to a person: aligned step lines, spinners for long
//! work, and colour, all only when stderr is a terminal; in a pipe the
//! output stays plain and free of control characters.

// Used by the commands being built this session; remove with the placeholders.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether stderr is a terminal (spinners and colour go there).
pub(crate) fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// Prints one aligned step line on stderr: `  label         text`.
pub(crate) fn step(label: &str, text: impl Display) {
    let label = format!("{label:<13}");
    eprintln!("  {} {text}", console::style(label).for_stderr().cyan());
}

/// A success line (green label on a terminal).
pub(crate) fn ok(label: &str, text: impl Display) {
    let label = format!("{label:<13}");
    eprintln!("  {} {text}", console::style(label).for_stderr().green());
}

/// A failure line (red label on a terminal).
pub(crate) fn failed(label: &str, text: impl Display) {
    let label = format!("{label:<13}");
    eprintln!("  {} {text}", console::style(label).for_stderr().red());
}

/// A spinner on stderr with a message, hidden when stderr is not a
/// terminal. Call [`ProgressBar::finish_and_clear`] when done.
pub(crate) fn spinner(message: impl Into<String>) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
