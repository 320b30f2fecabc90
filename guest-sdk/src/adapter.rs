//! The generic glue between a [`Task`] and the component's exports.

use std::sync::Once;

use crate::bindings::pipeweave::task::runtime;
use crate::bindings::pipeweave::task::types as wit;
use crate::context::Context;
use crate::error::TaskError;
use crate::task::Task;

static PANIC_HOOK: Once = Once::new();

/// Installs, once, a panic hook that reports the panic to the host with
/// `runtime.report-panic` (which also logs it), so the failed attempt
/// carries the panic message and location instead of a bare trap.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| runtime::report_panic(&info.to_string())));
    });
}

/// `task.describe` for `T`.
pub(crate) fn describe<T: Task>() -> wit::Descriptor {
    install_panic_hook();
    crate::descriptor::into_wit(T::describe())
}

/// `task.run` for `T`: parses the input, runs the task and serializes the
/// output.
pub(crate) fn run<T: Task>(ctx: wit::Context) -> Result<wit::TaskResult, wit::TaskError> {
    install_panic_hook();
    let context = Context::<T::Input>::from_wit(ctx).map_err(TaskError::into_wit)?;
    let (output, run_next) = T::run(&context).map_err(TaskError::into_wit)?.into_parts();
    let output = serde_json::to_string(&output).map_err(|e| {
        TaskError::fatal(format!("the task output does not serialize as JSON: {e}"))
            .with_code("INVALID_OUTPUT")
            .into_wit()
    })?;
    Ok(wit::TaskResult { output, run_next })
}
