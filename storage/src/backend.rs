//! Storage backends as the spec configures them (`STORAGE_BACKENDS`, a JSON
//! array; `DEFAULT_STORAGE_BACKEND_ID`), and opening one as an
//! [`ObjectStore`].
//!
//! ```json
//! [{ "id": "local-dev", "provider": "local", "bucket": "data",
//!    "credentials": { "basePath": "./storage" }, "isDefault": true },
//!  { "id": "minio", "provider": "minio", "endpoint": "http://localhost:9000",
//!    "bucket": "pipeweave", "credentials": { "accessKey": "…", "secretKey": "…" } }]
//! ```
//!
//! Providers: `local` (a directory, `basePath/bucket`), `aws-s3` (also
//! `s3`), `minio` (any S3-compatible server: custom endpoint, path-style
//! requests) and `gcs`. A backend's credentials never leave the
//! orchestrator except sealed in a storage token; [`PublicBackend`] is the
//! listing without them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

/// Which kind of storage a backend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Provider {
    /// A directory on this machine (and on hosts that share it).
    #[serde(rename = "local")]
    Local,
    /// Amazon S3.
    #[serde(rename = "aws-s3", alias = "s3")]
    AwsS3,
    /// An S3-compatible server (MinIO, Ceph, s3s…), addressed path-style.
    #[serde(rename = "minio")]
    Minio,
    /// Google Cloud Storage.
    #[serde(rename = "gcs")]
    Gcs,
}

impl Provider {
    /// The name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::AwsS3 => "aws-s3",
            Self::Minio => "minio",
            Self::Gcs => "gcs",
        }
    }
}

/// A backend's credentials; which fields apply depends on the provider
/// (the spec's names; MinIO's `accessKey`/`secretKey` and S3's
/// `accessKeyId`/`secretAccessKey` are interchangeable).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// `local`: the directory holding buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// S3 and MinIO: the access key id.
    #[serde(default, alias = "accessKey", skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// S3 and MinIO: the secret access key.
    #[serde(default, alias = "secretKey", skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// S3: a session token for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// GCS: the service account's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// GCS: the service account's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_email: Option<String>,
    /// GCS: the service account's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials")
            .field("base_path", &self.base_path)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key", &hidden(&self.private_key))
            .finish()
    }
}

/// One configured backend, as the spec's `STORAGE_BACKENDS` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique id (`primary-s3`).
    pub id: String,
    /// Which kind of storage.
    pub provider: Provider,
    /// Where the service is (`https://s3.amazonaws.com`,
    /// `http://localhost:9000`); the provider's own when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket (for `local`, a directory under `basePath`).
    pub bucket: String,
    /// S3: the region (`us-east-1` when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Provider-specific credentials.
    #[serde(default)]
    pub credentials: Credentials,
    /// Whether runs use this backend when none is named.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_default: bool,
    /// S3: address buckets by path (`endpoint/bucket/key`) rather than by
    /// host name. Always on for `minio`; on for `aws-s3` with a custom
    /// endpoint unless set to `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
}

/// What is wrong with a backend configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `STORAGE_BACKENDS` is not the expected JSON.
    #[error("STORAGE_BACKENDS is not a JSON array of backends: {0}")]
    Json(String),
    /// A backend breaks a rule.
    #[error("storage backend {id:?}: {field}: {reason}")]
    Invalid {
        /// The backend.
        id: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two backends share an id.
    #[error("storage backend id {0:?} appears twice")]
    Duplicate(String),
    /// No default, or more than one.
    #[error("{0}")]
    Default(String),
    /// The backend could not be opened.
    #[error("storage backend {id:?} cannot be opened: {reason}")]
    Open {
        /// The backend.
        id: String,
        /// Why.
        reason: String,
    },
}

impl BackendConfig {
    /// A local backend in `base_path/bucket`.
    pub fn local(
        id: impl Into<String>,
        base_path: impl Into<String>,
        bucket: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            provider: Provider::Local,
            endpoint: None,
            bucket: bucket.into(),
            region: None,
            credentials: Credentials {
                base_path: Some(base_path.into()),
                ..Credentials::default()
            },
            is_default: true,
            path_style: None,
        }
    }

    /// Checks the fields its provider needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| ConfigError::Invalid {
            id: self.id.clone(),
            field,
            reason: reason.to_owned(),
        };
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            return Err(invalid("id", "use 1 to 64 letters, digits, '-' or '_'"));
        }
        if self.bucket.is_empty() || self.bucket.contains("..") || self.bucket.starts_with('/') {
            return Err(invalid(
                "bucket",
                "must be a bucket name (no '..', no leading '/')",
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && self.provider != Provider::Local
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid("endpoint", "must be an http:// or https:// URL"));
        }
        let credentials = &self.credentials;
        match self.provider {
            Provider::Local => {
                if credentials.base_path.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(
                        "credentials.basePath",
                        "is required for a local backend",
                    ));
                }
            }
            Provider::AwsS3 | Provider::Minio => {
                if credentials.access_key_id.is_some() != credentials.secret_access_key.is_some() {
                    return Err(invalid(
                        "credentials",
                        "give both the access key id and the secret access key, or neither (to use the environment's)",
                    ));
                }
                if self.provider == Provider::Minio && self.endpoint.is_none() {
                    return Err(invalid(
                        "endpoint",
                        "is required for an S3-compatible server",
                    ));
                }
            }
            Provider::Gcs => {
                // The spec's example names the public endpoint; anything
                // else would be ignored by the client, so it is refused.
                if self
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.trim_end_matches('/') != "https://storage.googleapis.com")
                {
                    return Err(invalid(
                        "endpoint",
                        "other than https://storage.googleapis.com is not supported for gcs; remove it",
                    ));
                }
                let parts = [
                    credentials.client_email.is_some(),
                    credentials.private_key.is_some(),
                ];
                if parts[0] != parts[1] {
                    return Err(invalid(
                        "credentials",
                        "give both clientEmail and privateKey, or neither (to use the environment's)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The listing without credentials.
    pub fn public(&self) -> PublicBackend {
        PublicBackend {
            id: self.id.clone(),
            provider: self.provider,
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            is_default: self.is_default,
        }
    }

    /// Opens the backend. Nothing is contacted yet: a wrong endpoint or
    /// credential shows at the first read or write.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>, ConfigError> {
        let failed = |error: object_store::Error| ConfigError::Open {
            id: self.id.clone(),
            reason: error.to_string(),
        };
        let credentials = &self.credentials;
        let store: Arc<dyn ObjectStore> = match self.provider {
            Provider::Local => {
                let root = PathBuf::from(credentials.base_path.as_deref().unwrap_or("."))
                    .join(&self.bucket);
                std::fs::create_dir_all(&root).map_err(|error| ConfigError::Open {
                    id: self.id.clone(),
                    reason: format!("cannot create {}: {error}", root.display()),
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&root)
                        .map_err(failed)?
                        .with_automatic_cleanup(true),
                )
            }
            Provider::AwsS3 | Provider::Minio => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&self.bucket)
                    .with_region(self.region.as_deref().unwrap_or("us-east-1"));
                if let Some(endpoint) = &self.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let path_style = self.provider == Provider::Minio
                    || self.path_style.unwrap_or(self.endpoint.is_some());
                builder = builder.with_virtual_hosted_style_request(!path_style);
                if let (Some(id), Some(secret)) =
                    (&credentials.access_key_id, &credentials.secret_access_key)
                {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret);
                }
                if let Some(token) = &credentials.session_token {
                    builder = builder.with_token(token);
                }
                Arc::new(builder.build().map_err(failed)?)
            }
            Provider::Gcs => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&self.bucket);
                if let (Some(email), Some(key)) =
                    (&credentials.client_email, &credentials.private_key)
                {
                    let account = serde_json::json!({
                        "type": "service_account",
                        "project_id": credentials.project_id,
                        "client_email": email,
                        "private_key": key,
                    });
                    builder = builder.with_service_account_key(account.to_string());
                }
                Arc::new(builder.build().map_err(failed)?)
            }
        };
        Ok(store)
    }
}

/// A backend as `GET /api/storage/backends` lists it: no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicBackend {
    /// Its id.
    pub id: String,
    /// Which kind of storage.
    pub provider: Provider,
    /// Where the service is, when not the provider's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// The region, for S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether runs use it when none is named.
    pub is_default: bool,
}

/// The configured backends, one of them the default.
#[derive(Debug, Clone)]
pub struct Backends {
    backends: Vec<BackendConfig>,
    default: usize,
}

impl Backends {
    /// Reads the spec's configuration: `json` is `STORAGE_BACKENDS` (a JSON
    /// array) and `default_id` is `DEFAULT_STORAGE_BACKEND_ID`. The
    /// default is the one named there, else the one marked `isDefault`,
    /// else the only one.
    pub fn from_json(json: &str, default_id: Option<&str>) -> Result<Self, ConfigError> {
        let backends: Vec<BackendConfig> =
            serde_json::from_str(json).map_err(|error| ConfigError::Json(error.to_string()))?;
        Self::new(backends, default_id)
    }

    /// One local backend, `local`, in `base_path/data`: what the
    /// orchestrator uses when nothing is configured. A relative path is
    /// made absolute here, so hosts that share the directory read it right.
    pub fn local_default(base_path: impl Into<String>) -> Self {
        let base_path: String = base_path.into();
        let absolute = std::path::absolute(&base_path)
            .map(|path| path.to_string_lossy().into_owned())
            .unwrap_or(base_path);
        Self {
            backends: vec![BackendConfig::local("local", absolute, "data")],
            default: 0,
        }
    }

    /// Checks the backends and picks the default.
    pub fn new(
        mut backends: Vec<BackendConfig>,
        default_id: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if backends.is_empty() {
            return Err(ConfigError::Json(
                "the array is empty; configure at least one backend".into(),
            ));
        }
        for (index, backend) in backends.iter().enumerate() {
            backend.validate()?;
            if backends[..index].iter().any(|b| b.id == backend.id) {
                return Err(ConfigError::Duplicate(backend.id.clone()));
            }
        }
        let default = match default_id {
            Some(id) => backends.iter().position(|b| b.id == id).ok_or_else(|| {
                ConfigError::Default(format!(
                    "DEFAULT_STORAGE_BACKEND_ID is {id:?}, but no backend has that id"
                ))
            })?,
            None => {
                let marked: Vec<usize> = (0..backends.len())
                    .filter(|&i| backends[i].is_default)
                    .collect();
                match (marked.as_slice(), backends.len()) {
                    ([one], _) => *one,
                    ([], 1) => 0,
                    ([], _) => {
                        return Err(ConfigError::Default(
                            "several storage backends and none is the default: mark one \"isDefault\": true or set DEFAULT_STORAGE_BACKEND_ID".into(),
                        ));
                    }
                    _ => {
                        return Err(ConfigError::Default(
                            "more than one storage backend is marked \"isDefault\"".into(),
                        ));
                    }
                }
            }
        };
        for (index, backend) in backends.iter_mut().enumerate() {
            backend.is_default = index == default;
        }
        Ok(Self { backends, default })
    }

    /// The default backend.
    pub fn default_backend(&self) -> &BackendConfig {
        &self.backends[self.default]
    }

    /// The backend with this id.
    pub fn get(&self, id: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.id == id)
    }

    /// Every backend, the default marked.
    pub fn iter(&self) -> impl Iterator<Item = &BackendConfig> {
        self.backends.iter()
    }
}

/// The configured backends, opened.
#[derive(Clone)]
pub struct Stores {
    backends: Backends,
    opened: Vec<Arc<dyn ObjectStore>>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Opens every backend (nothing is contacted yet).
    pub fn open(backends: Backends) -> Result<Self, ConfigError> {
        let opened = backends
            .iter()
            .map(BackendConfig::open)
            .collect::<Result<_, _>>()?;
        Ok(Self { backends, opened })
    }

    /// The configuration.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The default backend and its store.
    pub fn default_store(&self) -> (&BackendConfig, &Arc<dyn ObjectStore>) {
        (
            &self.backends.backends[self.backends.default],
            &self.opened[self.backends.default],
        )
    }

    /// The backend with this id and its store.
    pub fn get(&self, id: &str) -> Option<(&BackendConfig, &Arc<dyn ObjectStore>)> {
        let index = self.backends.backends.iter().position(|b| b.id == id)?;
        Some((&self.backends.backends[index], &self.opened[index]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_configuration_parses_and_picks_its_default() -> Result<(), ConfigError> {
        let backends = Backends::from_json(
            r#"[
              { "id": "local-dev", "provider": "local", "endpoint": "file://", "bucket": "data",
                "credentials": { "basePath": "./storage" }, "isDefault": true },
              { "id": "primary-s3", "provider": "aws-s3", "endpoint": "https://s3.amazonaws.com",
                "bucket": "pipeweave-prod", "region": "us-east-1",
                "credentials": { "accessKeyId": "AKIA", "secretAccessKey": "shh" } },
              { "id": "gcs-backup", "provider": "gcs", "endpoint": "https://storage.googleapis.com",
                "bucket": "pipeweave-backup",
                "credentials": { "projectId": "p", "clientEmail": "a@b", "privateKey": "-----BEGIN" } },
              { "id": "local-minio", "provider": "minio", "endpoint": "http://localhost:9000",
                "bucket": "pipeweave-dev", "credentials": { "accessKey": "minioadmin", "secretKey": "minioadmin" } }
            ]"#,
            None,
        )?;
        assert_eq!(backends.default_backend().id, "local-dev");
        let minio = backends.get("local-minio").map(|b| &b.credentials);
        assert_eq!(
            minio.and_then(|c| c.access_key_id.as_deref()),
            Some("minioadmin"),
            "MinIO's accessKey is the access key id"
        );
        let named = Backends::from_json(
            r#"[{ "id": "a", "provider": "local", "bucket": "x", "credentials": { "basePath": "/tmp" } },
                { "id": "b", "provider": "local", "bucket": "y", "credentials": { "basePath": "/tmp" } }]"#,
            Some("b"),
        )?;
        assert_eq!(named.default_backend().id, "b");
        Ok(())
    }

    #[test]
    fn a_bad_configuration_names_the_backend_and_the_field() {
        let cases = [
            (
                r#"[{ "id": "m", "provider": "minio", "bucket": "b" }]"#,
                "endpoint",
            ),
            (
                r#"[{ "id": "l", "provider": "local", "bucket": "b" }]"#,
                "basePath",
            ),
            (
                r#"[{ "id": "s", "provider": "aws-s3", "bucket": "b", "credentials": { "accessKeyId": "x" } }]"#,
                "credentials",
            ),
            (
                r#"[{ "id": "s", "provider": "ftp", "bucket": "b" }]"#,
                "ftp",
            ),
            (
                r#"[{ "id": "g", "provider": "gcs", "bucket": "b", "endpoint": "http://127.0.0.1:4443" }]"#,
                "is not supported for gcs",
            ),
            (
                r#"[{ "id": "a", "provider": "local", "bucket": "x", "credentials": { "basePath": "/t" } },
                 { "id": "a", "provider": "local", "bucket": "y", "credentials": { "basePath": "/t" } }]"#,
                "twice",
            ),
            (
                r#"[{ "id": "a", "provider": "local", "bucket": "x", "credentials": { "basePath": "/t" } },
                 { "id": "b", "provider": "local", "bucket": "y", "credentials": { "basePath": "/t" } }]"#,
                "isDefault",
            ),
        ];
        for (json, expected) in cases {
            let message = Backends::from_json(json, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(message.contains(expected), "{json}: {message:?}");
        }
    }

    #[test]
    fn debug_output_and_the_public_listing_hide_secrets() -> Result<(), ConfigError> {
        let backends = Backends::from_json(
            r#"[{ "id": "s3", "provider": "aws-s3", "bucket": "b",
                  "credentials": { "accessKeyId": "AKIA", "secretAccessKey": "very-secret" } }]"#,
            None,
        )?;
        let backend = backends.default_backend();
        assert!(!format!("{backend:?}").contains("very-secret"));
        let listed = serde_json::to_string(&backend.public()).unwrap_or_default();
        assert!(
            !listed.contains("very-secret") && !listed.contains("AKIA"),
            "{listed}"
        );
        Ok(())
    }
}
