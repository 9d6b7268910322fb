//! `dev-operator`: the simulated operator as a standalone server, for
//! development, scripts and interop checks against other clients. It serves
//! the buckets endpoint and both identity-map endpoints (v2 and v3).
//!
//! Prints exactly one line to stdout once listening
//! (`dev-operator listening on http://ADDR:PORT with N buckets`), so a
//! script that passed `--listen 127.0.0.1:0` can read the port. Logs go to
//! stderr; `RUST_LOG` adjusts them (rotated bucket ids are logged at debug).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::DevOperatorArgs;
use crate::credentials::{ApiKey, ClientSecret};
use crate::rotation::BucketRotation;
use crate::simulator::{SimulatedOperator, SimulatorConfig};
use crate::timestamp::format_operator;

pub async fn run(args: &DevOperatorArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = config_from(args)?;
    let operator = SimulatedOperator::start(config, args.listen)
        .await
        .with_context(|| format!("cannot serve on {}", args.listen))?;
    if let Some(path) = &args.dump {
        write_dump(path, &operator.snapshot())
            .with_context(|| format!("cannot write the table to {}", path.display()))?;
    }
    println!(
        "dev-operator listening on {} with {} buckets",
        operator.base_url(),
        operator.bucket_count()
    );

    let stopped_by = wait_for_stop_signal().await?;
    tracing::info!(signal = stopped_by, "stopping");
    operator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn config_from(args: &DevOperatorArgs) -> anyhow::Result<SimulatorConfig> {
    let api_key =
        ApiKey::new(&args.api_key).context("invalid API key (--api-key or UID2_API_KEY)")?;
    let client_secret = ClientSecret::from_base64(&args.client_secret)
        .context("invalid client secret (--client-secret or UID2_CLIENT_SECRET)")?;
    if args.rotate_every == Some(Duration::ZERO) {
        bail!("--rotate-every must be longer than zero");
    }
    let mut config = SimulatorConfig::new(api_key, client_secret, args.buckets);
    config.seed = args.seed;
    config.rotate_every = args.rotate_every;
    config.rotate_count = args.rotate_count.unwrap_or(0);
    Ok(config)
}

fn write_dump(path: &Path, rows: &[BucketRotation]) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        writeln!(
            out,
            "{}\t{}",
            row.bucket_id,
            format_operator(row.last_updated)
        )?;
    }
    out.into_inner()?.sync_all()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Only fails if a subscriber is already installed, which is then kept.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn wait_for_stop_signal() -> anyhow::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
