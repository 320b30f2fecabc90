//! Run ids as the API shows them (`trun_` or `prun_` and 32 hex digits)
//! and as the database stores them (a UUID v7, so new runs sort by creation
//! time and land at the end of the primary-key index).

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            const PREFIX: &'static str = $prefix;

            /// A new id, ordered after every id made before it.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let invalid = || InvalidId {
                    what: $what,
                    prefix: $prefix,
                    text: text.to_owned(),
                };
                let hex = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
                if hex.len() != 32 {
                    return Err(invalid());
                }
                Uuid::try_parse(hex).map(Self).map_err(|_| invalid())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9a-fA-F]{32}$")))
                    .description(Some(concat!("A ", $what, " id: `", $prefix, "` and 32 hex digits.")))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

prefixed_id!(
    /// A task run's id.
    RunId,
    "trun_",
    "task run",
    "trun_019ac2a1f3e27c55a1b2c3d4e5f60718"
);

prefixed_id!(
    /// A pipeline run's id.
    PipelineRunId,
    "prun_",
    "pipeline run",
    "prun_019ac2a1f3e27c55a1b2c3d4e5f60718"
);

/// The text is not an id of the kind expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a {what} id (expected `{prefix}` and 32 hex digits): {text:?}")]
pub struct InvalidId {
    /// What kind of id was expected.
    pub what: &'static str,
    /// Its prefix.
    pub prefix: &'static str,
    /// The text given.
    pub text: String,
}

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
