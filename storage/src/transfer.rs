//! Moving bytes between files and object storage without holding them in
//! memory: an upload keeps at most a couple of parts in flight, whatever
//! the file's size, and a download writes each chunk as it arrives.

use std::sync::Arc;

use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;

/// The size of one part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading the local file failed.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// The store refused or failed the write.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The object.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Streams `file` to `path` (a single put when small, a multipart upload
/// otherwise) and returns its size. A failed upload is aborted, so it
/// leaves no object behind.
pub async fn upload_file(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    file: &mut tokio::fs::File,
) -> Result<u64, TransferError> {
    let mut writer = BufWriter::with_capacity(store, path.clone(), PART_BYTES)
        .with_max_concurrency(PARTS_IN_FLIGHT);
    let copied = copy(file, &mut writer).await;
    let finished = match copied {
        Ok(size) => writer.shutdown().await.map(|()| size).map_err(Copy::Write),
        Err(error) => Err(error),
    };
    match finished {
        Ok(size) => Ok(size),
        Err(error) => {
            let _ = writer.abort().await;
            Err(error)
        }
    }
    .map_err(|error| match error {
        Copy::Read(source) => TransferError::Read(source),
        Copy::Write(source) => TransferError::Write {
            path: path.to_string(),
            source,
        },
    })
}

enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl From<std::io::Error> for Copy {
    fn from(error: std::io::Error) -> Self {
        Self::Write(error)
    }
}

/// Copies in part-sized reads, telling read errors from write errors.
async fn copy(file: &mut tokio::fs::File, writer: &mut BufWriter) -> Result<u64, Copy> {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = vec![0_u8; 1 << 20];
    let mut total = 0_u64;
    loop {
        let read = file.read(&mut buffer).await.map_err(Copy::Read)?;
        if read == 0 {
            return Ok(total);
        }
        writer.write_all(&buffer[..read]).await?;
        total += read as u64;
    }
}

/// A download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The store refused or failed the read.
    #[error(transparent)]
    Store(#[from] object_store::Error),
    /// Writing the local file failed.
    #[error("cannot write {file}: {source}")]
    Write {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Streams the object at `path` into a new local `file`, chunk by chunk,
/// and returns its size.
pub async fn download_file(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    file: &std::path::Path,
) -> Result<u64, DownloadError> {
    use futures::StreamExt as _;
    let write_error = |source| DownloadError::Write {
        file: file.display().to_string(),
        source,
    };
    let mut chunks = store.get(path).await?.into_stream();
    let mut out = tokio::fs::File::create(file).await.map_err(write_error)?;
    let mut total = 0_u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        out.write_all(&chunk).await.map_err(write_error)?;
        total += chunk.len() as u64;
    }
    out.flush().await.map_err(write_error)?;
    Ok(total)
}
