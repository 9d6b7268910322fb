//! `map`: maps a few identifiers once and prints the operator's answers;
//! nothing is stored. The one-line check of credentials and connectivity
//! against an operator (INTERFACE.md).
//!
//! Raw emails and phones are normalized and hashed here, as the operator
//! would; only hashes are sent. An identifier that is not a valid email,
//! phone or hash is reported as `invalid identifier` without being sent.
//! Identifiers are printed back to the user who gave them, never logged.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::table::Table;
use crate::cli::{Cli, HashedArg, MapApiArg, MapArgs};
use crate::identity::{IdentityHash, IdentityType};
use crate::operator::{MapLimits, UnmappedReason, V2Result, V3Result, map_v2, map_v3};
use crate::timestamp::format_utc;

/// Requests in flight for one `map` call; a probe maps a few identifiers.
const CONCURRENCY: usize = 4;

pub(crate) async fn run(cli: &Cli, args: &MapArgs) -> anyhow::Result<ExitCode> {
    let identifiers = identifiers_from(&args.identifiers)?;
    if identifiers.is_empty() {
        anyhow::bail!("no identifiers: give them as arguments, or one per line on stdin");
    }
    let settings = super::load_settings(cli)?;
    let connection = super::operator_connection(&settings)?;
    let client = connection.client()?;

    // Valid identifiers are sent, in input order; each keeps its position.
    let mut sent = Vec::new();
    let mut positions = Vec::new();
    for (position, identifier) in identifiers.iter().enumerate() {
        if let Some(identity) = parse(identifier, args.hashed) {
            positions.push(position);
            sent.push(identity);
        }
    }
    let limits = MapLimits::new(crate::operator::MAX_BATCH_SIZE, CONCURRENCY)?;
    let mut answers: Vec<Answer> = identifiers.iter().map(|_| Answer::invalid()).collect();
    if !sent.is_empty() {
        match args.api {
            MapApiArg::V3 => {
                let results = map_v3(&client, &sent, limits).await?;
                for (position, result) in positions.iter().zip(results) {
                    answers[*position] = Answer::from_v3(result);
                }
            }
            MapApiArg::V2 => {
                let results = map_v2(&client, &sent, limits).await?;
                for (position, result) in positions.iter().zip(results) {
                    answers[*position] = Answer::from_v2(result);
                }
            }
        }
    }

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for (identifier, answer) in identifiers.iter().zip(&answers) {
            serde_json::to_writer(&mut out, &Line { identifier, answer })?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    } else {
        let header = vec![
            "identifier",
            "uid2",
            "previous",
            "refresh_from",
            "bucket",
            "unmapped",
        ];
        let mut table = Table::new(out, header);
        for (identifier, answer) in identifiers.iter().zip(&answers) {
            let cell = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
            table.push(vec![
                identifier.clone(),
                cell(&answer.uid2),
                cell(&answer.previous_uid2),
                cell(&answer.refresh_from),
                cell(&answer.bucket_id),
                cell(&answer.unmapped),
            ])?;
        }
        table.finish()?.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The arguments, or, when there are none or just `-`, one per line on stdin.
fn identifiers_from(arguments: &[String]) -> anyhow::Result<Vec<String>> {
    if !(arguments.is_empty() || arguments == ["-"]) {
        if arguments.iter().any(|argument| argument == "-") {
            anyhow::bail!("`-` (read stdin) cannot be mixed with identifiers on the command line");
        }
        return Ok(arguments.to_vec());
    }
    let mut identifiers = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("cannot read identifiers from stdin")?;
        let identifier = line.trim_end_matches('\r');
        if !identifier.trim().is_empty() {
            identifiers.push(identifier.to_owned());
        }
    }
    Ok(identifiers)
}

/// A raw email (has an `@`), a phone (starts with `+`), or with `--hashed`
/// a hash of the given type; `None` when it is none of them.
fn parse(identifier: &str, hashed: Option<HashedArg>) -> Option<(IdentityType, IdentityHash)> {
    match hashed {
        Some(HashedArg::Email) => Some((
            IdentityType::Email,
            IdentityHash::from_hash_text(identifier).ok()?,
        )),
        Some(HashedArg::Phone) => Some((
            IdentityType::Phone,
            IdentityHash::from_hash_text(identifier).ok()?,
        )),
        None if identifier.trim_start().starts_with('+') => Some((
            IdentityType::Phone,
            IdentityHash::of_phone(identifier).ok()?,
        )),
        None => Some((
            IdentityType::Email,
            IdentityHash::of_email(identifier).ok()?,
        )),
    }
}

/// One identifier's answer, as printed.
#[derive(Serialize)]
struct Answer {
    uid2: Option<String>,
    previous_uid2: Option<String>,
    refresh_from: Option<String>,
    bucket_id: Option<String>,
    unmapped: Option<String>,
}

impl Answer {
    fn invalid() -> Self {
        Self::unmapped(&UnmappedReason::InvalidIdentifier)
    }

    fn unmapped(reason: &UnmappedReason) -> Self {
        Self {
            uid2: None,
            previous_uid2: None,
            refresh_from: None,
            bucket_id: None,
            unmapped: Some(reason.to_string()),
        }
    }

    fn from_v3(result: V3Result) -> Self {
        match result {
            V3Result::Mapped(mapping) => Self {
                uid2: Some(mapping.current.to_base64()),
                previous_uid2: mapping.previous.map(|uid| uid.to_base64()),
                refresh_from: Some(format_utc(mapping.refresh_from)),
                bucket_id: None,
                unmapped: None,
            },
            V3Result::Unmapped(reason) => Self::unmapped(&reason),
        }
    }

    fn from_v2(result: V2Result) -> Self {
        match result {
            V2Result::Mapped { uid, bucket_id } => Self {
                uid2: Some(uid.to_base64()),
                previous_uid2: None,
                refresh_from: None,
                bucket_id: Some(bucket_id),
                unmapped: None,
            },
            V2Result::Unmapped(reason) => Self::unmapped(&reason),
        }
    }
}

/// `map --json`: one object per identifier, in input order (INTERFACE.md).
#[derive(Serialize)]
struct Line<'a> {
    identifier: &'a str,
    #[serde(flatten)]
    answer: &'a Answer,
}
