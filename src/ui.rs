//! How commands talk to a person: aligned step lines, spinners for long
//! work, tables with aligned columns, run states and times written for
//! people, and colour, all only on a terminal; in a pipe the output stays
//! plain and free of control characters.

use std::fmt::Display;
use std::io::IsTerminal;
use std::time::Duration;

use chrono::{DateTime, Utc};
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

/// A table printed on stdout: a header row and aligned columns, two spaces
/// apart. Cells may be styled; widths count only the visible characters.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line ending in a newline, with `indent`
    /// before every line.
    pub(crate) fn render(&self, indent: &str) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|h| console::measure_text_width(h))
            .collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate().take(columns) {
                widths[index] = widths[index].max(console::measure_text_width(cell));
            }
        }
        let line = |cells: Vec<String>| {
            let mut text = String::from(indent);
            for (index, width) in widths.iter().enumerate() {
                let cell = cells.get(index).map_or("", String::as_str);
                if index + 1 == columns {
                    text.push_str(cell);
                } else {
                    text.push_str(&console::pad_str(
                        cell,
                        *width,
                        console::Alignment::Left,
                        None,
                    ));
                    text.push_str("  ");
                }
            }
            format!("{}\n", text.trim_end())
        };
        let mut text = line(
            self.headers
                .iter()
                .map(|h| console::style(h).for_stdout().bold().to_string())
                .collect(),
        );
        for row in &self.rows {
            text.push_str(&line(row.clone()));
        }
        text
    }

    /// Prints the table on stdout.
    pub(crate) fn print(&self) {
        print!("{}", self.render(""));
    }
}

/// A run's state, coloured on a terminal: green for success, red for
/// failures, yellow for cancelled and waiting, cyan while running.
pub(crate) fn state(name: &str) -> String {
    let styled = console::style(name).for_stdout();
    match name {
        "succeeded" => styled.green(),
        "dead" | "failed" | "partial" => styled.red(),
        "cancelled" | "awaiting_retry" => styled.yellow(),
        "running" => styled.cyan(),
        _ => styled.dim(),
    }
    .to_string()
}

/// Text that matters less (ids, hashes), dimmed on a terminal.
pub(crate) fn dim(text: impl Display) -> String {
    console::style(text).for_stdout().dim().to_string()
}

/// Text to notice (a code change, a warning), yellow on a terminal.
pub(crate) fn notice(text: impl Display) -> String {
    console::style(text).for_stdout().yellow().to_string()
}

/// Parses an RFC 3339 time as the API writes it.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An API time as `2026-11-26 09:41:47` (UTC), or `-` when absent.
pub(crate) fn time(value: &serde_json::Value) -> String {
    value.as_str().and_then(parse_time).map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// How long from `start` to `end` (or to now while `end` is absent), for
/// people: `1.50 s`, `250.0 ms`; `-` without a start.
pub(crate) fn elapsed(start: &serde_json::Value, end: &serde_json::Value) -> String {
    let Some(start) = start.as_str().and_then(parse_time) else {
        return "-".to_owned();
    };
    let end = end.as_str().and_then(parse_time).unwrap_or_else(Utc::now);
    let millis = (end - start).num_milliseconds().max(0);
    pipeweave_host::human::format_duration(Duration::from_millis(
        u64::try_from(millis).unwrap_or(0),
    ))
}

/// A code hash shortened to its first 16 hex digits, as `dev` prints it.
pub(crate) fn short_hash(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// A JSON value as text for a table cell: strings bare, `-` for null.
pub(crate) fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_by_visible_width() {
        let mut table = Table::new(&["ID", "STATE"]);
        table.row(vec!["a".into(), "queued".into()]);
        table.row(vec!["longer-id".into(), "running".into()]);
        let text = console::strip_ansi_codes(&table.render("")).into_owned();
        assert_eq!(
            text,
            "ID         STATE\na          queued\nlonger-id  running\n"
        );
    }

    #[test]
    fn durations_between_api_times() {
        let start = serde_json::json!("2026-11-26T09:41:47.000Z");
        let end = serde_json::json!("2026-11-26T09:41:48.500Z");
        assert_eq!(elapsed(&start, &end), "1.50 s");
        assert_eq!(elapsed(&serde_json::Value::Null, &end), "-");
        assert_eq!(time(&start), "2026-11-26 09:41:47");
    }
}
