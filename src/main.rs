//! The `pipeweave` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    pipeweave::cli::main()
}
