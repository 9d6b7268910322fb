//! Peak memory of opening a first-sync answer (2^20 rows, ~91 MiB base64).
//!
//! ```text
//! cargo run --release --example open_response_memory -- generate body.b64
//! /usr/bin/time -v target/release/examples/open_response_memory hold body.b64
//! /usr/bin/time -v target/release/examples/open_response_memory open body.b64
//! ```
//!
//! `hold` only reads the body into memory, as the client does before opening
//! it; `open` then runs decode + decrypt + parse. The difference between the
//! two runs' maximum resident set sizes is what opening costs on top of
//! holding the body. Each run also prints its own peak (`VmHWM`).

use std::process::ExitCode;

use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::Nonce;
use uid2_bucket_sync::operator::{BodyEncoding, open_buckets_body};

#[path = "../benches/support/large_response.rs"]
mod large_response;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["generate", path] => generate(path),
        ["hold", path] => open(path, false),
        ["open", path] => open(path, true),
        _ => {
            eprintln!("usage: open_response_memory (generate|hold|open) FILE");
            ExitCode::FAILURE
        }
    }
}

/// File layout: secret (32) ‖ nonce (8) ‖ body.
fn generate(path: &str) -> ExitCode {
    let response = large_response::build(large_response::ROWS);
    let mut file = Vec::with_capacity(40 + response.body.len());
    file.extend_from_slice(&response.secret_key);
    file.extend_from_slice(&response.nonce);
    file.extend_from_slice(&response.body);
    std::fs::write(path, file).expect("write the body file");
    println!(
        "wrote {path}: {} bytes base64 body, {} bytes JSON",
        response.body.len(),
        response.json_bytes
    );
    ExitCode::SUCCESS
}

fn open(path: &str, open: bool) -> ExitCode {
    let mut body = std::fs::read(path).expect("read the body file");
    let secret = ClientSecret::from_bytes(body[..32].try_into().expect("secret"));
    let nonce: Nonce = body[32..40].try_into().expect("nonce");
    // The body as the client holds it: one buffer, shifted in place.
    body.drain(..40);
    let body_bytes = body.len();
    let held = peak_kib();
    if open {
        let opened =
            open_buckets_body(&secret, body, BodyEncoding::Base64, &nonce).expect("the body opens");
        println!("rows: {}", opened.rotations.len());
    } else {
        std::hint::black_box(&body);
    }
    let peak = peak_kib();
    println!(
        "body {:.1} MiB; peak while holding {:.1} MiB; peak at end {:.1} MiB; \
         extra {:.1} MiB = {:.2}x body",
        body_bytes as f64 / 1048576.0,
        held as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - held) as f64 / 1024.0,
        (peak - held) as f64 * 1024.0 / body_bytes as f64
    );
    ExitCode::SUCCESS
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
