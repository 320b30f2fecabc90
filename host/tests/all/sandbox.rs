//! The per-attempt filesystem: empty at the start, private to the attempt,
//! the only one the guest can see; assets kept only when the attempt
//! succeeds.

use std::io::Read;

use pipeweave_host::RunRequest;
use serde_json::json;

use crate::{misbehave, run_guest, runner, succeeded};

#[tokio::test]
async fn two_runs_cannot_see_each_others_assets() {
    let runner = runner();
    let first = misbehave(
        &runner,
        json!({"mode": "write_marker", "marker": "first run was here"}),
    )
    .await;
    succeeded(&first);
    assert_eq!(first.assets.len(), 1);

    // The first report (and so its sandbox) is still alive.
    let second = misbehave(&runner, json!({"mode": "list_sandbox"})).await;
    let output = &succeeded(&second).output;
    assert_eq!(output["privateExists"], false);
    assert_eq!(
        output["entries"],
        json!([]),
        "a new attempt starts in an empty directory"
    );

    let mut text = String::new();
    first
        .open_asset("marker")
        .expect("asset readable")
        .read_to_string(&mut text)
        .expect("utf-8");
    assert_eq!(text, "first run was here");

    // After the first report is gone, a reused sandbox is still empty.
    drop(first);
    let third = misbehave(&runner, json!({"mode": "list_sandbox"})).await;
    assert_eq!(succeeded(&third).output["entries"], json!([]));
}

#[tokio::test]
async fn the_guest_sees_no_host_files_and_no_environment() {
    // SAFETY of the assertion: the test process has variables; the guest
    // must see none of them.
    assert!(std::env::vars().next().is_some());
    let runner = runner();
    let report = misbehave(&runner, json!({"mode": "escape"})).await;
    let output = &succeeded(&report).output;
    assert_eq!(output["succeeded"], json!([]), "{output}");
    assert_eq!(output["env"], json!([]), "{output}");
}

#[tokio::test]
async fn assets_round_trip_and_are_kept_only_for_a_successful_attempt() {
    let runner = runner();
    let report = run_guest(&runner, "assets", RunRequest::new(json!({}))).await;
    succeeded(&report);
    let mut keys: Vec<_> = report.assets.iter().map(|a| a.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for asset in &report.assets {
        let size = std::io::copy(
            &mut report.open_asset(&asset.key).expect("open"),
            &mut std::io::sink(),
        )
        .expect("read");
        assert_eq!(size, asset.size, "{}", asset.key);
    }
    let out = tempfile::tempdir().expect("tempdir");
    report.copy_assets_to(out.path()).expect("copy");
    assert_eq!(std::fs::read_dir(out.path()).expect("list").count(), 3);

    let failed = misbehave(&runner, json!({"mode": "fail"})).await;
    assert!(failed.assets.is_empty());
    assert!(failed.open_asset("marker").is_err());
}

#[tokio::test]
async fn an_upstream_asset_is_readable_by_key() {
    let runner = runner();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.txt");
    std::fs::write(&file, "upstream says hello").expect("write");
    let mut request = RunRequest::new(json!({"readUpstreamAsset": "report"}));
    request.upstream_assets.insert("report".into(), file);
    let report = run_guest(&runner, "assets", request).await;
    let output = &succeeded(&report).output;
    assert!(
        output.to_string().contains("upstream says hello"),
        "{output}"
    );
}
