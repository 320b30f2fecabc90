//! Run ids as the API shows them (`trun_` and 32 hex digits) and as the
//! database stores them (a UUID v7, so new runs sort by creation time and
//! land at the end of the primary-key index).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A task run's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub Uuid);

impl RunId {
    const PREFIX: &'static str = "trun_";

    /// A new id, ordered after every id made before it.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0.simple())
    }
}

/// The text is not a run id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a task run id (expected `trun_` and 32 hex digits): {0:?}")]
pub struct InvalidRunId(pub String);

impl FromStr for RunId {
    type Err = InvalidRunId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| InvalidRunId(text.to_owned()))?;
        if hex.len() != 32 {
            return Err(InvalidRunId(text.to_owned()));
        }
        Uuid::try_parse(hex)
            .map(Self)
            .map_err(|_| InvalidRunId(text.to_owned()))
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl utoipa::PartialSchema for RunId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^trun_[0-9a-fA-F]{32}$"))
            .description(Some("A task run id: `trun_` and 32 hex digits."))
            .examples(["trun_019ac2a1f3e27c55a1b2c3d4e5f60718"])
            .into()
    }
}

impl utoipa::ToSchema for RunId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_round_trips_through_its_text() {
        let id = RunId::new();
        let text = id.to_string();
        assert!(text.starts_with("trun_") && text.len() == 37, "{text}");
        assert_eq!(text.parse::<RunId>(), Ok(id));
    }

    #[test]
    fn other_texts_are_refused() {
        for text in [
            "",
            "trun_",
            "run_0123",
            "trun_xyz",
            &format!("trun_{}", "g".repeat(32)),
        ] {
            assert!(text.parse::<RunId>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let first = RunId::new();
        let second = RunId::new();
        assert!(first < second);
    }
}
