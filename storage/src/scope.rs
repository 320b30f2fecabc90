//! What a storage token lets its holder touch: path prefixes it may read
//! and prefixes it may write (a writer may read back what it may write).
//! A prefix ends with `/` and covers everything below it; one without a
//! trailing `/` is a single object. So `runs/trun_1/` covers
//! `runs/trun_1/outputs/a.json` but not `runs/trun_10/…`.

use object_store::path::Path;
use serde::{Deserialize, Serialize};

/// Readable and writable path prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    /// Prefixes (or single objects) the holder may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Prefixes (or single objects) the holder may write, and read.
    #[serde(default)]
    pub write: Vec<String>,
}

/// Reading or writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A get or a list.
    Read,
    /// A put or a delete.
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
        })
    }
}

/// A path the scope does not allow, or that is not a storage path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not a valid object path (`..`, empty segments, a leading `/`).
    #[error("{path:?} is not a storage path: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Outside the token's scope.
    #[error("this token may not {access} {path:?}; it may read {read:?} and write {write:?}")]
    OutOfScope {
        /// What was attempted.
        access: Access,
        /// The path.
        path: String,
        /// What the token may read.
        read: Vec<String>,
        /// What the token may write.
        write: Vec<String>,
    },
}

impl Scope {
    /// Parses `text` as an object path and checks that this scope allows
    /// `access` to it.
    pub fn check(&self, access: Access, text: &str) -> Result<Path, ScopeError> {
        let path = parse_path(text)?;
        let allowed =
            |prefixes: &[String]| prefixes.iter().any(|prefix| covers(prefix, path.as_ref()));
        let ok = match access {
            Access::Read => allowed(&self.read) || allowed(&self.write),
            Access::Write => allowed(&self.write),
        };
        if ok {
            Ok(path)
        } else {
            Err(ScopeError::OutOfScope {
                access,
                path: text.to_owned(),
                read: self.read.clone(),
                write: self.write.clone(),
            })
        }
    }
}

/// Whether `prefix` covers `path`: a directory prefix (ending in `/`)
/// covers what is below it, any other prefix only itself.
fn covers(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix
    }
}

/// Parses an object path, refusing `..`, `.`, empty segments and a leading
/// or trailing `/`.
pub fn parse_path(text: &str) -> Result<Path, ScopeError> {
    let invalid = |reason: String| ScopeError::InvalidPath {
        path: text.to_owned(),
        reason,
    };
    if text.is_empty() || text.starts_with('/') || text.ends_with('/') {
        return Err(invalid(
            "it must be a relative path to an object, like runs/trun_…/outputs/output.json".into(),
        ));
    }
    let path = Path::parse(text).map_err(|error| invalid(error.to_string()))?;
    if path.as_ref() != text {
        return Err(invalid("it has empty segments".into()));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            read: vec!["standalone/trun_1/input.json".into(), "runs/up/".into()],
            write: vec!["runs/trun_1/".into()],
        }
    }

    #[test]
    fn a_scope_allows_its_prefixes_and_nothing_else() {
        let scope = scope();
        assert!(
            scope
                .check(Access::Read, "standalone/trun_1/input.json")
                .is_ok()
        );
        assert!(scope.check(Access::Read, "runs/up/outputs/x.json").is_ok());
        assert!(scope.check(Access::Write, "runs/trun_1/assets/pdf").is_ok());
        assert!(
            scope.check(Access::Read, "runs/trun_1/assets/pdf").is_ok(),
            "a writer reads back"
        );

        for (access, path) in [
            (Access::Write, "runs/up/outputs/x.json"),
            (Access::Write, "standalone/trun_1/input.json"),
            (Access::Read, "runs/trun_10/outputs/x.json"),
            (Access::Read, "standalone/trun_1/input.json.bak"),
            (Access::Read, "modules/abc.wasm"),
        ] {
            assert!(
                matches!(
                    scope.check(access, path),
                    Err(ScopeError::OutOfScope { .. })
                ),
                "{access} {path}"
            );
        }
    }

    #[test]
    fn paths_that_escape_are_not_paths() {
        for path in [
            "runs/trun_1/../trun_2/x",
            "/etc/passwd",
            "runs//trun_1/x",
            "",
            "runs/trun_1/",
            "runs/./x",
        ] {
            assert!(
                matches!(
                    scope().check(Access::Write, path),
                    Err(ScopeError::InvalidPath { .. })
                ),
                "{path:?}"
            );
        }
    }
}
