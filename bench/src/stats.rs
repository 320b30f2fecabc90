//! Medians, percentiles and a description of the machine for the results.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

/// The `q` quantile (0 to 1) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Median, min and max of several rounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Self {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }

    /// Of durations, in microseconds.
    pub(crate) fn of_durations(values: &[Duration]) -> Self {
        Self::of(
            &values
                .iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect::<Vec<_>>(),
        )
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// One line of a scenario's table: a figure over the rounds and its target.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) figure: String,
    pub(crate) spread: Spread,
    /// Digits after the decimal point.
    pub(crate) digits: usize,
    pub(crate) target: String,
    /// Whether the median meets the target; `None` for a figure without one.
    pub(crate) met: Option<bool>,
}

impl Line {
    /// A figure without a target, from one value per round.
    pub(crate) fn new(figure: impl Into<String>, values: &[f64], digits: usize) -> Self {
        Self {
            figure: figure.into(),
            spread: Spread::of(values),
            digits,
            target: String::new(),
            met: None,
        }
    }

    /// Adds a target, and whether the median meets it.
    pub(crate) fn target(mut self, target: &str, met: impl Fn(f64) -> bool) -> Self {
        self.target = target.to_owned();
        self.met = Some(met(self.spread.median));
        self
    }
}

/// Prints `lines` as a Markdown table.
pub(crate) fn print_lines(lines: &[Line]) {
    println!("| figure | median | min | max | target | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for line in lines {
        let d = line.digits;
        let verdict = match line.met {
            Some(true) => "**met**",
            Some(false) => "**not met**",
            None => "",
        };
        println!(
            "| {} | {:.d$} | {:.d$} | {:.d$} | {} | {verdict} |",
            line.figure, line.spread.median, line.spread.min, line.spread.max, line.target
        );
    }
}

/// What a scenario hands back: its raw rows for the results file, and the
/// lines of its table for `all`'s summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) rows: Vec<Value>,
    pub(crate) summary: Vec<Line>,
}

/// Date, machine, load and commit, for every row.
pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({
        "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, usize::from),
        "loadAverage": load,
        "commit": command_output("git", &["rev-parse", "--short", "HEAD"]),
        // Uncommitted changes to tracked files, other than the results file.
        "dirty": command_output("git", &["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results.jsonl"])
            .is_some_and(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let samples: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_micros(51));
        assert_eq!(percentile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_micros(100));
        let spread = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((spread.median, spread.min, spread.max), (2.5, 1.0, 10.0));
    }
}
