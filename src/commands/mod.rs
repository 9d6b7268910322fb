//! One file per command: each loads what it needs, does its work and
//! formats its output. Errors reach the user as one line on stderr.

use std::process::ExitCode;

use crate::cli::{Cli, Command};

mod dev_operator;

/// Runs a parsed command line to completion and returns the exit code.
pub fn execute(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match &cli.command {
            Command::Run => todo_command("run"),
            Command::Sync => todo_command("sync"),
            Command::Status { .. } => todo_command("status"),
            Command::Queue(_) => todo_command("queue"),
            Command::DevOperator(args) => dev_operator::run(args).await,
            Command::Demo(_) => todo_command("demo"),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn todo_command(name: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{name} is not wired yet")
}
