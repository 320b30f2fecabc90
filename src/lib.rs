//! The `pipeweave` command: one binary for task authors and operators.
//!
//! # Layout
//!
//! - [`cli`]: argument parsing, logging set-up and exit codes; it hands each
//!   subcommand to its module.
//! - `commands`: one module per subcommand (`run`: the local runner).
//! - `parse`: parsers for durations, sizes and `@file` arguments.

pub mod cli;
mod commands;
mod parse;
