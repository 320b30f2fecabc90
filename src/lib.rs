//! The `pipeweave` command: one binary for task authors and operators.
//!
//! # Layout
//!
//! - [`cli`]: argument parsing, logging set-up and exit codes; it hands each
//!   subcommand to its module.
//! - `commands`: one module per subcommand (`run`: the local runner).
//! - `build`: building a task crate into a component.
//! - `project`: projects (a task crate or workspace and its `pipeweave.toml`).
//! - `parse`: parsers for durations, sizes and `@file` arguments.

mod build;
pub mod cli;
mod client;
mod commands;
mod parse;
mod project;
mod ui;
