//! Entry point: parse the command line and hand over to the library.

use clap::Parser;
use uid2_bucket_sync::cli::{Cli, execute};

fn main() -> std::process::ExitCode {
    execute(Cli::parse())
}
