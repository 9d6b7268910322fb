//! `dev-operator`: the simulated operator as a standalone server, for
//! development, scripts and interop checks against other clients. It serves
//! the buckets endpoint and both identity-map endpoints (v2 and v3).
//!
//! Prints exactly one line to stdout once listening
//! (`dev-operator listening on http://ADDR:PORT with N buckets`), so a
//! script that passed `--listen 127.0.0.1:0` can read the port. Logs go to
//! stderr; `RUST_LOG` adjusts them (rotated bucket ids are logged at debug).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::cli::DevOperatorArgs;
use crate::config::{LogFormat, LogSettings};
use crate::credentials::{ApiKey, ClientSecret};
use crate::daemon::shutdown::cancel_on_signal;
use crate::rotation::BucketRotation;
use crate::simulator::{SimulatedOperator, SimulatorConfig};
use crate::timestamp::format_operator;

pub(crate) async fn run(args: &DevOperatorArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&LogSettings {
        format: LogFormat::Text,
        level: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
    });
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

    cancel_on_signal(CancellationToken::new())
        .await
        .context("cannot listen for SIGTERM/SIGINT")?;
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
