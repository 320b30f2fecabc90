//! Parsers for the values people type on the command line: durations
//! (`30s`, `500ms`), sizes (`64MiB`) and JSON given inline or as `@file`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub(crate) fn duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| {
        format!("{text:?} is not a duration: use a number with ms, s, m or h, such as 30s")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("unknown duration unit {other:?} in {text:?}: use ms, s, m or h"),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        bail!("{text:?} must be a positive duration");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `64MiB`, `1GiB`, `512KiB` (also `MB`, `M`, … as the same binary units);
/// a unit is required.
pub(crate) fn size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().with_context(|| {
        format!("{text:?} is not a size: use a number with a unit, such as 64MiB")
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "" => bail!("{text:?} has no unit: write it as, for example, {text}MiB"),
        other => bail!("unknown size unit {other:?} in {text:?}: use B, KiB, MiB or GiB"),
    };
    let bytes = value
        .checked_mul(multiplier)
        .with_context(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        bail!("{text:?} must be more than zero");
    }
    Ok(bytes)
}

/// The text of an argument that is either inline or `@path`.
pub(crate) fn inline_or_file(text: &str) -> anyhow::Result<String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}")),
        None => Ok(text.to_owned()),
    }
}

/// JSON given inline or as `@file`; `what` names the argument in errors.
pub(crate) fn json(text: &str, what: &str) -> anyhow::Result<serde_json::Value> {
    let raw = inline_or_file(text)?;
    serde_json::from_str(&raw).with_context(|| {
        format!("{what} is not valid JSON; quote it for the shell, e.g. --input '{{\"name\": \"Ada\"}}', or pass @file.json")
    })
}

/// `NAME=VALUE`, with `what` naming the flag in errors.
pub(crate) fn key_value<'a>(text: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => bail!("{what} takes NAME=VALUE, got {text:?}"),
    }
}

/// `KEY=@path` for files.
pub(crate) fn key_file(text: &str, what: &str) -> anyhow::Result<(String, PathBuf)> {
    let (key, value) = key_value(text, what)?;
    let Some(path) = value.strip_prefix('@') else {
        bail!("{what} takes KEY=@path, got {text:?}");
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!("{what}: {} is not a readable file", path.display());
    }
    Ok((key.to_owned(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_common_units() -> anyhow::Result<()> {
        assert_eq!(duration("500ms")?, Duration::from_millis(500));
        assert_eq!(duration("30")?, Duration::from_secs(30));
        assert_eq!(duration("1.5s")?, Duration::from_millis(1500));
        assert_eq!(duration("2m")?, Duration::from_secs(120));
        assert!(duration("0s").is_err());
        assert!(duration("5 parsecs").is_err());
        assert!(duration("soon").is_err());
        Ok(())
    }

    #[test]
    fn sizes_need_a_unit() -> anyhow::Result<()> {
        assert_eq!(size("64MiB")?, 64 << 20);
        assert_eq!(size("1g")?, 1 << 30);
        assert_eq!(size("512KiB")?, 512 << 10);
        let err = size("64").expect_err("no unit").to_string();
        assert!(err.contains("64MiB"), "{err}");
        assert!(size("0MiB").is_err());
        assert!(size("99999999999GiB").is_err());
        Ok(())
    }

    #[test]
    fn key_values_need_a_name() {
        assert!(matches!(key_value("a=b=c", "--secret"), Ok(("a", "b=c"))));
        assert!(key_value("=x", "--secret").is_err());
        assert!(key_value("x", "--secret").is_err());
    }
}
