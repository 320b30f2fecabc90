//! `assets`: exercises the asset API. It stores a text asset
//! (`report.txt`), a JSON asset (`data.json`) and a binary asset from a file
//! it wrote itself (`/scratch.bin`, registered as `scratch.bin`), reads each
//! back and checks the round trip (a mismatch fails the run, code
//! `ROUNDTRIP_MISMATCH`), and returns the keys and sizes. With
//! `{"readUpstreamAsset": "key"}` it also reads that asset, which the host
//! provides from an upstream task, and returns its text.
//!
//! Build and run it from the workspace root:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-assets
//! cargo run -- run target/wasm32-wasip2/release/assets.wasm --input '{}'
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
            .timeout_secs(30)
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

        let scratch: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::fs::write("/scratch.bin", &scratch)?;
        let bytes = ctx.add_asset_from_path("scratch.bin", AssetKind::Binary, "/scratch.bin")?;
        check("scratch.bin", ctx.get_asset("scratch.bin")? == scratch)?;
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
