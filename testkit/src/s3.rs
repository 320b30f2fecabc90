//! A real S3-protocol server for tests: `s3s-fs`, which keeps objects in a
//! directory, checks SigV4 signatures and enforces S3's multipart rules.
//! Found on `PATH` or in `target/tools/bin`, and installed there with
//! `cargo install` when missing (about two minutes, once); if that fails
//! the test fails, it never skips.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::Server;

/// The s3s-fs version the tests run (0.15 needs a newer Rust).
pub const S3S_FS_VERSION: &str = "0.14.1";

/// A running s3s-fs with one bucket; stopped and its data removed on drop.
#[derive(Debug)]
pub struct S3Server {
    server: Server,
    root: tempfile::TempDir,
    /// The bucket the tests use.
    pub bucket: String,
    /// Its access key id.
    pub access_key: String,
    /// Its secret access key.
    pub secret_key: String,
}

impl S3Server {
    /// Starts a server on a free port with the bucket `pipeweave`.
    #[track_caller]
    pub fn start() -> Self {
        let binary = s3s_fs();
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let bucket = "pipeweave".to_owned();
        std::fs::create_dir(root.path().join(&bucket))
            .unwrap_or_else(|e| panic!("cannot make the bucket directory: {e}"));
        let access_key = "pipeweave-test".to_owned();
        let secret_key = "pipeweave-test-secret".to_owned();
        let mut command = Command::new(binary);
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1");
        let server = Server::start_until(command, Duration::from_secs(30), "server is running at ");
        Self {
            server,
            root,
            bucket,
            access_key,
            secret_key,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.server.url
    }

    /// Where an object is on disk (s3s-fs keeps a bucket as a directory).
    pub fn file(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(key)
    }
}

/// The `s3s-fs` binary.
#[track_caller]
pub fn s3s_fs() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn find_or_install() -> Result<PathBuf, String> {
    crate::find_or_install_binary(
        "s3s-fs",
        &[
            "s3s-fs",
            "--version",
            S3S_FS_VERSION,
            "--features",
            "binary",
            "--locked",
        ],
    )
}
