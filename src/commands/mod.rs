//! One module per `pipeweave` subcommand.

pub(crate) mod run;
