//! The one wasmtime engine a host process runs every task on, and the knobs
//! that shape it.
//!
//! Tasks are instantiated far more often than they are compiled, so the
//! engine is set up for cheap instantiation: the pooling allocator reserves
//! slots for memories, tables, instances and fiber stacks up front and
//! reuses them, keeping a little of each memory resident so a reused slot
//! does not page-fault on first touch. Epoch interruption gives every store
//! a wall-clock deadline that even a guest spinning in a loop cannot escape;
//! a ticker thread advances the epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::error::{Error, Result};

/// How the engine is built. The defaults suit a host on a small machine
/// running up to a few hundred attempts at once.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many task instances may be alive at once; sizes every pool.
    /// An attempt beyond it fails to instantiate, so set it above the
    /// host's capacity (plus one for `describe` calls).
    pub max_instances: u32,
    /// The largest linear memory any task may have, in bytes; a task's own
    /// memory limit is capped by it. Each pooled memory slot reserves this
    /// much address space (not physical memory).
    pub max_memory_bytes: u64,
    /// Bytes of each linear memory kept resident when its pool slot is
    /// reused: instantiation skips page faults for small tasks, at the cost
    /// of that much resident memory per slot.
    pub memory_keep_resident_bytes: usize,
    /// Maximum wasm stack in bytes; deeper recursion traps as a stack
    /// overflow.
    pub max_wasm_stack_bytes: usize,
    /// How often the epoch advances: the granularity of timeouts and of
    /// cancellation, and how often a long-running guest yields to other
    /// tasks on the same thread.
    pub epoch_tick: Duration,
    /// Compile with DWARF debug info and without optimisation, so gdb or
    /// lldb can stop in the guest's Rust source (`pipeweave run --debug`).
    pub debug_info: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_bytes: 4 << 30,
            memory_keep_resident_bytes: 1 << 20,
            max_wasm_stack_bytes: 512 << 10,
            epoch_tick: Duration::from_millis(10),
            debug_info: false,
        }
    }
}

/// A wasmtime [`Engine`] configured for tasks, with its epoch ticker.
/// Dropping it stops the ticker.
#[derive(Debug)]
pub struct TaskEngine {
    engine: Engine,
    config: EngineConfig,
    stop_ticker: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl TaskEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = config.max_instances.max(1);
        // A Rust component instantiates a handful of core instances (its
        // module plus canonical-ABI shims); interpreters built with
        // componentize-py or componentize-js need hundreds, each up to a few
        // MiB of metadata, and tables of ~200k elements.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .max_core_instances_per_component(400)
            .max_core_instance_size(8 << 20)
            .total_memories(instances.saturating_mul(2))
            .max_memories_per_component(8)
            .total_tables(instances.saturating_mul(4))
            .max_tables_per_component(16)
            .table_elements(200_000)
            .total_stacks(instances)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(config.memory_keep_resident_bytes)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            // Reset only the pages a task dirtied (Linux 6.7+), instead of
            // wiping the whole resident prefix of every memory on reuse.
            .pagemap_scan(Enabled::Auto);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack_bytes)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if config.debug_info {
            wasm.debug_info(true).cranelift_opt_level(OptLevel::None);
        }
        let engine = Engine::new(&wasm).map_err(|e| Error::Engine(e.to_string()))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = Arc::clone(&stop_ticker);
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("pipeweave-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            engine,
            config,
            stop_ticker,
            ticker: Some(ticker),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

impl Drop for TaskEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
