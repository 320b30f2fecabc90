//! Where a host's secrets come from, which of them an attempt gets, and how
//! their values are kept out of everything an attempt reports.
//!
//! A [`SecretStore`] holds secret values by name. It is read once, when the
//! host or the local runner starts (a host picks up a rotated value when it
//! restarts), from one of:
//!
//! - a **directory** with one file per secret ([`SecretStore::from_dir`]):
//!   the file name is the secret's name and its contents, minus one
//!   trailing newline, the value. This is what a Kubernetes Secret volume
//!   or a Docker secret mount looks like; entries whose names start with `.`
//!   (Kubernetes' `..data` bookkeeping) and subdirectories are skipped.
//! - a **YAML file** ([`SecretStore::from_yaml_file`]), by convention
//!   `.secrets.yaml` next to the task (keep it out of version control): a
//!   flat map of names to string values.
//!
//! ```yaml
//! api-token: "ghp_..."
//! slack.webhook: "https://hooks.slack.com/services/..."
//! ```
//!
//! Names follow the descriptor's rule: 1 to 128 letters, digits, `-`, `_` or
//! `.`. An attempt is handed only the secrets its task declared
//! ([`SecretStore::for_task`]); the runner drops any others it is given.
//!
//! A [`Redactor`] built from the values an attempt was handed replaces each
//! occurrence of a value with `[redacted:NAME]` in the attempt's log lines,
//! its stdout and stderr, its progress messages, its error and the denied
//! requests the host reports; the task's output and assets are its own and
//! are not rewritten. Values shorter than [`Redactor::MIN_LEN`] characters
//! are not redacted, since replacing every `on` or `42` in a log would
//! mangle it without protecting anything.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeweave_protocol::TaskDescriptor;
use pipeweave_protocol::descriptor::is_valid_secret_name;
use serde_json::Value;

/// The largest secret value read from a file, in bytes.
const MAX_SECRET_BYTES: u64 = 1 << 20;

/// A secret source that cannot be read or breaks a rule. Each variant names
/// the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The directory or file cannot be read.
    #[error("cannot read secrets from {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML file does not parse.
    #[error("{path} is not valid YAML: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_yaml_ng::Error,
    },
    /// The YAML file is not a map of names to strings.
    #[error("{path}: {problem}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        problem: String,
    },
    /// A secret's name breaks the naming rule.
    #[error(
        "{path}: {name:?} is not a valid secret name (1 to 128 letters, digits, '-', '_' or '.')"
    )]
    InvalidName {
        /// The file (for a directory, the secret's own file).
        path: PathBuf,
        /// The name as found.
        name: String,
    },
    /// A secret file is not UTF-8 text.
    #[error("{path}: a secret's value must be UTF-8 text")]
    NotText {
        /// The secret's file.
        path: PathBuf,
    },
    /// A secret file is larger than a secret should be.
    #[error("{path}: {size} bytes is more than a secret may hold ({MAX_SECRET_BYTES} bytes)")]
    TooLarge {
        /// The secret's file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
}

/// Secret values by name, read from a directory or a YAML file. Cheap to
/// clone. Its `Debug` output lists names, never values.
#[derive(Clone, Default)]
pub struct SecretStore {
    values: Arc<BTreeMap<String, String>>,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretStore {
    /// A store with no secrets: tasks that read one get `SECRET_NOT_SET`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads a directory with one file per secret (see the module docs).
    /// Symbolic links are followed, as a Kubernetes Secret volume needs.
    pub fn from_dir(dir: &Path) -> Result<Self, SecretsError> {
        let read_error = |path: &Path, source| SecretsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut values = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_error(dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(SecretsError::InvalidName {
                    name: name.to_string_lossy().into_owned(),
                    path,
                });
            };
            if name.starts_with('.') {
                continue;
            }
            let metadata = std::fs::metadata(&path).map_err(|e| read_error(&path, e))?;
            if metadata.is_dir() {
                continue;
            }
            if !is_valid_secret_name(name) {
                return Err(SecretsError::InvalidName {
                    name: name.to_owned(),
                    path,
                });
            }
            if metadata.len() > MAX_SECRET_BYTES {
                return Err(SecretsError::TooLarge {
                    size: metadata.len(),
                    path,
                });
            }
            let bytes = std::fs::read(&path).map_err(|e| read_error(&path, e))?;
            let mut value = String::from_utf8(bytes)
                .map_err(|_| SecretsError::NotText { path: path.clone() })?;
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            values.insert(name.to_owned(), value);
        }
        Ok(Self {
            values: Arc::new(values),
        })
    }

    /// Reads a YAML file that maps secret names to string values (see the
    /// module docs). An empty file is an empty store.
    pub fn from_yaml_file(path: &Path) -> Result<Self, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses the text of a secrets YAML file; `path` names it in errors.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self, SecretsError> {
        use serde_yaml_ng::Value as Yaml;
        let shape = |problem: String| SecretsError::Shape {
            path: path.to_path_buf(),
            problem,
        };
        let document: Yaml =
            serde_yaml_ng::from_str(text).map_err(|source| SecretsError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        let mapping = match document {
            Yaml::Null => return Ok(Self::empty()),
            Yaml::Mapping(mapping) => mapping,
            _ => {
                return Err(shape(
                    "expected a map of secret names to values, such as `api-token: \"...\"`".into(),
                ));
            }
        };
        let mut values = BTreeMap::new();
        for (key, value) in mapping {
            let Yaml::String(name) = key else {
                return Err(shape(format!(
                    "a key is not a string ({}); quote it",
                    yaml_kind(&key)
                )));
            };
            if !is_valid_secret_name(&name) {
                return Err(SecretsError::InvalidName {
                    path: path.to_path_buf(),
                    name,
                });
            }
            let value = match value {
                Yaml::String(value) => value,
                Yaml::Mapping(_) => {
                    return Err(shape(format!(
                        "the value of {name:?} is a map; the file is flat, one `name: value` \
                         per secret (such as `{name}.token: \"...\"`)"
                    )));
                }
                other => {
                    return Err(shape(format!(
                        "the value of {name:?} is {}, not a string; quote it",
                        yaml_kind(&other)
                    )));
                }
            };
            values.insert(name, value);
        }
        Ok(Self {
            values: Arc::new(values),
        })
    }

    /// A store holding these values; fails on a name that breaks the rule.
    /// `source` names where they came from, in errors.
    pub fn from_values(
        values: impl IntoIterator<Item = (String, String)>,
        source: &str,
    ) -> Result<Self, SecretsError> {
        let mut map = BTreeMap::new();
        for (name, value) in values {
            if !is_valid_secret_name(&name) {
                return Err(SecretsError::InvalidName {
                    path: PathBuf::from(source),
                    name,
                });
            }
            map.insert(name, value);
        }
        Ok(Self {
            values: Arc::new(map),
        })
    }

    /// This store with `other`'s values added; `other` wins on a name both
    /// hold.
    #[must_use]
    pub fn merged(&self, other: &SecretStore) -> Self {
        let mut values = (*self.values).clone();
        values.extend(
            other
                .values
                .iter()
                .map(|(name, value)| (name.clone(), value.clone())),
        );
        Self {
            values: Arc::new(values),
        }
    }

    /// The value of `name`, if the store holds it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every `(name, value)` the store holds, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The names the store holds, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// How many secrets the store holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store holds no secret.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The secrets `descriptor` declared that the store holds: what one
    /// attempt of that task is handed, and nothing else.
    pub fn for_task(&self, descriptor: &TaskDescriptor) -> HashMap<String, String> {
        descriptor
            .secrets
            .iter()
            .filter_map(|name| {
                self.values
                    .get(name)
                    .map(|value| (name.clone(), value.clone()))
            })
            .collect()
    }
}

fn yaml_kind(value: &serde_yaml_ng::Value) -> &'static str {
    use serde_yaml_ng::Value as Yaml;
    match value {
        Yaml::Null => "empty",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Replaces secret values with `[redacted:NAME]` (see the module docs).
#[derive(Clone, Default)]
pub struct Redactor {
    /// What to look for and what to write instead.
    patterns: Vec<(String, String)>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// Values shorter than this many characters are not redacted.
    pub const MIN_LEN: usize = 4;

    /// A redactor for these `(name, value)` pairs. Besides each value as it
    /// is, it looks for the value escaped as in a JSON string and, for a
    /// value of several lines (a PEM key), for each line of it.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut patterns: Vec<(String, String)> = Vec::new();
        let long_enough = |s: &str| s.chars().count() >= Self::MIN_LEN;
        for (name, value) in secrets {
            let replacement = format!("[redacted:{name}]");
            let mut add = |needle: &str| {
                if long_enough(needle) && !patterns.iter().any(|(n, _)| n == needle) {
                    patterns.push((needle.to_owned(), replacement.clone()));
                }
            };
            add(value);
            if let Ok(json) = serde_json::to_string(value) {
                add(&json[1..json.len() - 1]);
            }
            if value.contains('\n') {
                for line in value.lines() {
                    add(line.trim());
                }
            }
        }
        Self { patterns }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret value replaced. Where two values overlap,
    /// the one that starts first wins, then the longer.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
        for (needle, replacement) in &self.patterns {
            found.extend(
                text.match_indices(needle.as_str())
                    .map(|(start, m)| (start, start + m.len(), replacement.as_str())),
            );
        }
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = String::with_capacity(text.len());
        let mut position = 0;
        for (start, end, replacement) in found {
            if start < position {
                continue;
            }
            out.push_str(&text[position..start]);
            out.push_str(replacement);
            position = end;
        }
        out.push_str(&text[position..]);
        Cow::Owned(out)
    }

    /// [`Self::redact`] into an owned string.
    pub fn redact_string(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(redacted) => redacted,
        }
    }

    /// Redacts every string (and object key) in a JSON value.
    pub fn redact_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.redact(s) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact_string(key), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn a_directory_holds_one_secret_per_file_without_its_trailing_newline() {
        let dir = temp_dir();
        std::fs::write(dir.path().join("api-token"), "tok-123\n").expect("write");
        std::fs::write(dir.path().join("two.lines"), "a\nb\n\n").expect("write");
        std::fs::write(dir.path().join("crlf"), "value\r\n").expect("write");
        std::fs::create_dir(dir.path().join("..2026_11_26")).expect("mkdir");
        std::fs::write(dir.path().join(".hidden"), "x").expect("write");
        std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
        let store = SecretStore::from_dir(dir.path()).expect("reads");
        assert_eq!(store.get("api-token"), Some("tok-123"));
        assert_eq!(store.get("two.lines"), Some("a\nb\n"));
        assert_eq!(store.get("crlf"), Some("value"));
        assert_eq!(
            store.names().collect::<Vec<_>>(),
            ["api-token", "crlf", "two.lines"]
        );
        assert!(!format!("{store:?}").contains("tok-123"));
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_follows_links_as_a_kubernetes_secret_volume_has_them() {
        let dir = temp_dir();
        let data = dir.path().join("..data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("api-token"), "linked").expect("write");
        std::os::unix::fs::symlink("..data/api-token", dir.path().join("api-token"))
            .expect("symlink");
        let store = SecretStore::from_dir(dir.path()).expect("reads");
        assert_eq!(store.get("api-token"), Some("linked"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_bad_directory_entry_is_named_in_the_error() {
        let dir = temp_dir();
        std::fs::write(dir.path().join("bad name"), "x").expect("write");
        let error = SecretStore::from_dir(dir.path())
            .expect_err("bad name")
            .to_string();
        assert!(
            error.contains("\"bad name\" is not a valid secret name"),
            "{error}"
        );

        let dir = temp_dir();
        std::fs::write(dir.path().join("binary"), [0xff, 0xfe]).expect("write");
        let error = SecretStore::from_dir(dir.path())
            .expect_err("not text")
            .to_string();
        assert!(
            error.contains("binary: a secret's value must be UTF-8"),
            "{error}"
        );

        let missing = dir.path().join("missing");
        let error = SecretStore::from_dir(&missing)
            .expect_err("missing")
            .to_string();
        assert!(error.starts_with(&format!("cannot read secrets from {}", missing.display())));
    }

    #[test]
    fn a_yaml_file_is_a_flat_map_of_names_to_strings() {
        let path = Path::new(".secrets.yaml");
        let store = SecretStore::from_yaml_str(
            "# local secrets\napi-token: \"tok-123\"\nslack.webhook: https://hooks.example.com/x\n",
            path,
        )
        .expect("parses");
        assert_eq!(store.get("api-token"), Some("tok-123"));
        assert_eq!(
            store.get("slack.webhook"),
            Some("https://hooks.example.com/x")
        );
        assert!(
            SecretStore::from_yaml_str("", path)
                .expect("empty")
                .is_empty()
        );

        let error = |text: &str| {
            SecretStore::from_yaml_str(text, path)
                .expect_err(text)
                .to_string()
        };
        assert!(
            error("port: 5432")
                .contains("the value of \"port\" is a number, not a string; quote it")
        );
        assert!(error("github:\n  token: x").contains("is a map; the file is flat"));
        assert!(error("- a\n- b").contains("expected a map of secret names"));
        assert!(error("bad name: x").contains("\"bad name\" is not a valid secret name"));
        assert!(error("a: [").starts_with(".secrets.yaml is not valid YAML"));
        assert!(error("empty:").contains("the value of \"empty\" is empty"));
    }

    #[test]
    fn a_task_gets_only_the_secrets_it_declared() {
        let store = SecretStore::from_values(
            [
                ("api-token".to_owned(), "tok".to_owned()),
                ("other".to_owned(), "hidden".to_owned()),
            ],
            "test",
        )
        .expect("valid");
        let descriptor = TaskDescriptor::new("t").secrets(["api-token", "unset"]);
        let given = store.for_task(&descriptor);
        assert_eq!(given.len(), 1);
        assert_eq!(given.get("api-token").map(String::as_str), Some("tok"));
    }

    #[test]
    fn redaction_replaces_values_and_skips_short_ones() {
        let redactor = Redactor::new([
            ("api-token", "s3cr3t-value"),
            ("pin", "123"),
            ("quoted", "a\"b\\c-long"),
            ("pem", "-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----"),
        ]);
        assert_eq!(
            redactor.redact("token s3cr3t-value and s3cr3t-value; pin 123"),
            "token [redacted:api-token] and [redacted:api-token]; pin 123"
        );
        assert_eq!(
            redactor.redact(r#"{"q":"a\"b\\c-long"}"#),
            r#"{"q":"[redacted:quoted]"}"#
        );
        assert_eq!(redactor.redact("line AAAABBBB"), "line [redacted:pem]");
        assert!(matches!(redactor.redact("nothing here"), Cow::Borrowed(_)));
        let mut json = serde_json::json!({"message": "s3cr3t-value", "list": ["x s3cr3t-value"]});
        redactor.redact_json(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"message": "[redacted:api-token]", "list": ["x [redacted:api-token]"]})
        );
    }

    #[test]
    fn overlapping_values_redact_the_first_and_longest() {
        let redactor = Redactor::new([("short", "abcd"), ("long", "abcdefgh")]);
        assert_eq!(
            redactor.redact("xabcdefghx abcd"),
            "x[redacted:long]x [redacted:short]"
        );
    }
}
