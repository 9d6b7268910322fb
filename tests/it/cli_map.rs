//! `map` as a process against the simulated operator: raw identifiers are
//! hashed before they leave, answers come back in input order, and a
//! refusal is one line without the identifiers.

use crate::common;

use std::process::Output;

use common::app::{TestApp, spawn_app};
use common::process::output_with_stdin;
use serde_json::Value;
use uid2_bucket_sync::identity::IdentityHash;
use uid2_bucket_sync::simulator::MapCounts;

fn map(app: &TestApp, args: &[&str], stdin: Option<&str>) -> Output {
    output_with_stdin(app.command().arg("map").args(args), stdin.unwrap_or(""))
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn v3_answers_each_identifier_in_order_and_only_hashes_are_sent() {
    let app = spawn_app(64).await;
    let output = map(
        &app,
        &[
            "--json",
            "User@Example.com",
            "+12345678901",
            "optout@example.com",
            "not-an-email",
        ],
        None,
    );
    let lines = json_lines(&output);
    let identifiers: Vec<&str> = lines
        .iter()
        .map(|line| line["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        identifiers,
        [
            "User@Example.com",
            "+12345678901",
            "optout@example.com",
            "not-an-email"
        ]
    );
    for mapped in &lines[..2] {
        assert_eq!(mapped["uid2"].as_str().unwrap().len(), 44, "{mapped}");
        assert!(
            mapped["refresh_from"]
                .as_str()
                .unwrap()
                .ends_with("T00:00:00.000Z")
        );
        assert_eq!(mapped["unmapped"], Value::Null);
    }
    assert_eq!(lines[2]["unmapped"], "optout");
    assert_eq!(lines[2]["uid2"], Value::Null);
    assert_eq!(lines[3]["unmapped"], "invalid identifier");

    // The invalid one never left; the others went as hashes only, as raw
    // bytes although the configuration keeps base64 for the buckets.
    let requests = app.operator.map_requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].binary, "the map request was sent as base64");
    assert_eq!(
        requests[0].map_counts,
        Some(MapCounts {
            email: 0,
            email_hash: 2,
            phone: 0,
            phone_hash: 1,
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identifiers_from_stdin_with_a_dash_and_hashes_map_like_the_raw_values() {
    let app = spawn_app(64).await;
    let raw = json_lines(&map(&app, &["--json", "-"], Some("user@example.com\n")));
    let hash = IdentityHash::of_email("user@example.com").unwrap();
    let hex: String = hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let hashed = json_lines(&map(&app, &["--json", "--hashed", "email", &hex], None));
    assert_eq!(raw[0]["uid2"], hashed[0]["uid2"]);
    assert_eq!(hashed[0]["identifier"], hex.as_str());

    // v2 gives the same UID2 and names the bucket instead of a refresh time.
    let v2 = json_lines(&map(
        &app,
        &["--json", "--api", "v2", "user@example.com"],
        None,
    ));
    assert_eq!(v2[0]["uid2"], raw[0]["uid2"]);
    assert!(v2[0]["bucket_id"].is_string(), "{}", v2[0]);
    assert_eq!(v2[0]["refresh_from"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_is_one_line_that_names_neither_key_nor_identifier() {
    let app = spawn_app(64).await;
    let mut command = app.command();
    let output = command
        .env("UID2_API_KEY", "not-the-key")
        .args(["map", "secret.person@example.com"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("401"), "{stderr}");
    assert!(
        !stderr.contains("secret.person") && !stderr.contains("not-the-key"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_identifiers_at_all_is_refused() {
    let app = spawn_app(1).await;
    let output = map(&app, &[], Some(""));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no identifiers"),
        "{output:?}"
    );
}
