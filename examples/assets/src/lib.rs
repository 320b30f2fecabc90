//! `assets`: exercises the asset API. It stores a text asset
//! (`report.txt`), a JSON asset (`data.json`) and a binary asset from a file
//! it wrote itself (`/scratch.bin`, registered as `scratch.bin`), reads each
//! back and checks the round trip (a mismatch fails the run, code
//! `ROUNDTRIP_MISMATCH`), and returns the keys and sizes. With
//! `{"readUpstreamAsset": "key"}` it also reads that asset, which the host
//! provides from an upstream task, and returns its text.
//!
//! The scratch file is 4096 bytes unless `{"scratchBytes": n}` asks for
//! another size; the byte at offset `i` is `i % 251`, so a reader can check
//! any part of it. It is written and read back 1 MiB at a time, so even a
//! file of gigabytes keeps the guest's memory small: the end-to-end tests
//! and the benchmark's `data` scenario use it as a large asset. The task's
//! timeout (300 s) leaves room for writing, checking and uploading 1 GiB on
//! a slow machine.
//!
//! Build and run it from the workspace root:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-assets
//! cargo run -- run target/wasm32-wasip2/release/assets.wasm --input '{}'
//! cargo run -- run target/wasm32-wasip2/release/assets.wasm --input '{"scratchBytes": 104857600}'
//! ```

use pipeweave_sdk::{AssetKind, Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The input; `null` or `{}` is fine.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// The key of an asset provided by the host (from an upstream task) to
    /// read as text.
    #[serde(default)]
    pub read_upstream_asset: Option<String>,
    /// The size of `scratch.bin` in bytes; 4096 when absent.
    #[serde(default)]
    pub scratch_bytes: Option<u64>,
}

/// The size of `scratch.bin` when the input does not name one.
pub const DEFAULT_SCRATCH_BYTES: u64 = 4096;

/// The most the task holds of `scratch.bin` in memory at once.
const CHUNK_BYTES: usize = 1 << 20;

/// Fills `chunk` with the scratch pattern from file offset `offset`: the
/// byte at offset `i` is `i % 251`.
fn scratch_pattern(offset: u64, chunk: &mut [u8]) {
    let period: [u8; 251] = std::array::from_fn(|i| i as u8);
    let mut start = (offset % 251) as usize;
    let mut rest = chunk;
    while !rest.is_empty() {
        let n = rest.len().min(period.len() - start);
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(&period[start..start + n]);
        rest = tail;
        start = 0;
    }
}

/// Writes `size` bytes of the scratch pattern to `path`, a chunk at a time.
fn write_scratch(path: &str, size: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    let mut chunk = vec![0_u8; CHUNK_BYTES];
    let mut offset = 0;
    while offset < size {
        let n = usize::try_from(size - offset).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        scratch_pattern(offset, &mut chunk[..n]);
        file.write_all(&chunk[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Whether the file at `path` holds exactly `size` bytes of the scratch
/// pattern, read a chunk at a time.
fn scratch_matches(path: &std::path::Path, size: u64) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut read = vec![0_u8; CHUNK_BYTES];
    let mut expected = vec![0_u8; CHUNK_BYTES];
    let mut offset = 0_u64;
    loop {
        let n = file.read(&mut read)?;
        if n == 0 {
            return Ok(offset == size);
        }
        scratch_pattern(offset, &mut expected[..n]);
        if read[..n] != expected[..n] {
            return Ok(false);
        }
        offset += n as u64;
    }
}

/// One asset the task stored.
#[derive(Debug, Serialize)]
pub struct AssetInfo {
    /// The asset key.
    pub key: String,
    /// `json`, `text` or `binary`.
    pub kind: String,
    /// The size the host reported, in bytes.
    pub bytes: u64,
}

/// An asset read from upstream.
#[derive(Debug, Serialize)]
pub struct UpstreamAsset {
    /// The asset key.
    pub key: String,
    /// Its content as text.
    pub text: String,
}

/// The output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// The assets stored, in order.
    pub assets: Vec<AssetInfo>,
    /// The upstream asset read, if the input asked for one.
    pub upstream_asset: Option<UpstreamAsset>,
}

/// The task.
#[derive(Debug)]
pub struct Assets;

fn check(what: &str, ok: bool) -> Result<(), TaskError> {
    if ok {
        Ok(())
    } else {
        Err(
            TaskError::fatal(format!("{what} did not read back as written"))
                .with_code("ROUNDTRIP_MISMATCH"),
        )
    }
}

impl Task for Assets {
    type Input = Option<Input>;
    type Output = Output;

    fn describe() -> Descriptor {
        Descriptor::new("assets")
            .description("Writes, reads back and checks assets")
            // Room for writing, checking and uploading a 1 GiB scratch file
            // (`scratchBytes`) on a slow, shared machine.
            .timeout_secs(300)
    }

    fn run(ctx: &Context<Option<Input>>) -> Result<TaskResult<Output>, TaskError> {
        let mut assets = Vec::new();

        let text = "PipeWeave asset report\nline two\n";
        let bytes = ctx.add_text_asset("report.txt", text)?;
        check("report.txt", ctx.get_text_asset("report.txt")? == text)?;
        assets.push(AssetInfo {
            key: "report.txt".into(),
            kind: "text".into(),
            bytes,
        });

        let data = json!({ "rows": [1, 2, 3], "source": "assets example" });
        let bytes = ctx.add_json_asset("data.json", &data)?;
        check(
            "data.json",
            ctx.get_json_asset::<serde_json::Value>("data.json")? == data,
        )?;
        assets.push(AssetInfo {
            key: "data.json".into(),
            kind: "json".into(),
            bytes,
        });

        let size = ctx
            .input()
            .as_ref()
            .and_then(|i| i.scratch_bytes)
            .unwrap_or(DEFAULT_SCRATCH_BYTES);
        write_scratch("/scratch.bin", size)?;
        let bytes = ctx.add_asset_from_path("scratch.bin", AssetKind::Binary, "/scratch.bin")?;
        check(
            "scratch.bin",
            bytes == size && scratch_matches(&ctx.get_asset_path("scratch.bin")?, size)?,
        )?;
        assets.push(AssetInfo {
            key: "scratch.bin".into(),
            kind: "binary".into(),
            bytes,
        });
        ctx.info(format!("stored {} assets", assets.len()));

        let upstream_asset = match ctx
            .input()
            .as_ref()
            .and_then(|i| i.read_upstream_asset.as_ref())
        {
            Some(key) => Some(UpstreamAsset {
                key: key.clone(),
                text: ctx.get_text_asset(key)?,
            }),
            None => None,
        };

        Ok(Output {
            assets,
            upstream_asset,
        }
        .into())
    }
}

export_task!(Assets);
