//! `dev-operator` as a script runs it: the real binary, its flags checked
//! before it serves anything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CLIENT_SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAwMDA=";
const RANGE: &str = "1..=16777216";

fn dev_operator(buckets: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"));
    command
        .args(["dev-operator", "--listen", "127.0.0.1:0"])
        .arg(format!("--buckets={buckets}"))
        .env("UID2_API_KEY", "dev-operator-test-key")
        .env("UID2_CLIENT_SECRET", CLIENT_SECRET)
        .env_remove("RUST_LOG");
    command
}

#[test]
fn every_out_of_range_bucket_count_is_refused_with_the_one_range_the_help_states() {
    let help = dev_operator("1").arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let buckets_help = help
        .lines()
        .find(|l| l.trim_start().starts_with("--buckets"))
        .unwrap();
    assert!(buckets_help.contains(RANGE), "{buckets_help}");

    for value in ["0", "-1", "16777217", "5000000000"] {
        let output = dev_operator(value).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "--buckets {value}: {stderr}");
        assert!(
            stderr.contains(&format!("{value} is not in {RANGE}")),
            "--buckets {value}: {stderr}"
        );
    }
}

#[test]
fn one_bucket_is_within_the_range_and_served() {
    let mut child = dev_operator("1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first_line.starts_with("dev-operator listening on http://127.0.0.1:")
            && first_line.trim_end().ends_with(" with 1 buckets"),
        "{first_line}"
    );
}
