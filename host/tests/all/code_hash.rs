//! Code identity and the compiled-component cache.

use std::process::Command;

use pipeweave_host::{EngineConfig, Error, Runner, RunnerConfig};
use pipeweave_protocol::CodeHash;

#[tokio::test]
async fn the_code_hash_is_the_sha256_of_the_component_bytes() {
    let path = pipeweave_testkit::guest("hello");
    let bytes = std::fs::read(&path).expect("read guest");
    let runner = crate::runner();
    let task = runner.load(bytes.clone()).await.expect("loads");
    assert_eq!(task.code_hash(), &CodeHash::of(&bytes));
    let again = runner.load_file(&path).await.expect("loads again");
    assert_eq!(again.code_hash(), task.code_hash(), "same bytes, same hash");

    let sha256sum = Command::new("sha256sum")
        .arg(&path)
        .output()
        .expect("sha256sum runs");
    let printed = String::from_utf8_lossy(&sha256sum.stdout);
    assert_eq!(
        printed.split_whitespace().next(),
        Some(task.code_hash().as_str())
    );
}

#[tokio::test]
async fn describe_reports_the_declared_options() {
    let runner = crate::runner();
    let task = runner
        .load_file(&pipeweave_testkit::guest("misbehave"))
        .await
        .expect("loads");
    let descriptor = task.descriptor();
    assert_eq!(descriptor.id, "misbehave");
    assert_eq!(descriptor.allowed_next, vec!["a", "b"]);
    assert_eq!(descriptor.memory_limit_bytes, Some(64 << 20));
    assert_eq!(descriptor.outbound_hosts, vec!["127.0.0.1:*"]);
    assert_eq!(descriptor.secrets, vec!["api-token"]);
    assert_eq!(descriptor.retries, 3, "spec default");
}

#[tokio::test]
async fn a_compiled_component_is_cached_on_disk_and_reused() {
    let cache = tempfile::tempdir().expect("tempdir");
    let config = || RunnerConfig {
        engine: EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        },
        cache_dir: Some(cache.path().to_path_buf()),
        ..RunnerConfig::default()
    };
    let hello = pipeweave_testkit::guest("hello");
    let first = Runner::new(config()).expect("runner");
    let task = first.load_file(&hello).await.expect("compiles");
    let artifacts: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir exists")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(
        artifacts[0].starts_with(task.code_hash().as_str()),
        "{artifacts:?}"
    );

    let debug = Runner::new(RunnerConfig {
        engine: EngineConfig {
            max_instances: 4,
            debug_info: true,
            ..EngineConfig::default()
        },
        cache_dir: Some(cache.path().to_path_buf()),
        ..RunnerConfig::default()
    })
    .expect("runner");
    debug
        .load_file(&hello)
        .await
        .expect("compiles with debug info");
    let count = std::fs::read_dir(cache.path()).expect("cache dir").count();
    assert_eq!(
        count, 2,
        "another engine configuration gets its own artifact"
    );

    let second = Runner::new(config()).expect("runner");
    let reloaded = second.load_file(&hello).await.expect("loads from cache");
    assert_eq!(reloaded.descriptor(), task.descriptor());
}

#[tokio::test]
async fn a_core_module_is_refused_with_a_hint_to_build_a_component() {
    let runner = crate::runner();
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    match runner.load(core_module).await {
        Err(Error::Compile(message)) => assert!(message.contains("wasm32-wasip2"), "{message}"),
        other => panic!("expected a compile error, got {other:?}"),
    }
    match runner.load(b"not wasm at all".to_vec()).await {
        Err(Error::Compile(message)) => assert!(message.contains("magic"), "{message}"),
        other => panic!("expected a compile error, got {other:?}"),
    }
}
