//! Moving bytes between files and object storage without holding them in
//! memory: an upload keeps at most a couple of parts in flight, whatever
//! the file's size.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
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
