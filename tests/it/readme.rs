//! The README, run as a newcomer would: its two first commands exist as
//! written, and its local walkthrough (config snippet and shell commands)
//! works against the built binary. A README edit that breaks the
//! walkthrough breaks this test.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// The fenced block right after `<!-- readme-test: NAME -->`.
fn block(name: &str) -> &'static str {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = README
        .split_once(marker.as_str())
        .unwrap_or_else(|| panic!("README has no {marker}"))
        .1;
    let fence_start = after.find("```").expect("a fenced block after the marker");
    let body = &after[fence_start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    &body[..body.find("\n```").expect("a closing fence")]
}

fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const BINARY: &str = env!("CARGO_BIN_EXE_uid2-bucket-sync");

fn binary_dir() -> &'static Path {
    Path::new(BINARY).parent().unwrap()
}

/// This PATH without any directory that has a uid2-bucket-sync, so only
/// the walkthrough's own install step can make the command found.
fn path_without_the_binary() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<_> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("uid2-bucket-sync").exists())
        .collect();
    std::env::join_paths(kept).unwrap().into_string().unwrap()
}

#[test]
fn the_readme_opens_with_the_demo_and_the_test_command() {
    let first_block = README.split("```sh\n").nth(1).unwrap();
    let commands: Vec<&str> = first_block
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(commands, ["cargo run --release -- demo", "cargo test"]);
}

/// The walkthrough, from a directory laid out like the checkout: the
/// examples, and `target/release` holding the binary under test. The
/// release build itself is not repeated here; a `cargo` shell function
/// checks that the walkthrough asks for exactly `cargo build --release`.
#[test]
fn the_local_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_loopback_port());
    let config = block("local-config").replace("127.0.0.1:8080", &address);
    std::fs::write(dir.path().join("local.toml"), config).unwrap();
    std::os::unix::fs::symlink(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples"),
        dir.path().join("examples"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::os::unix::fs::symlink(binary_dir(), dir.path().join("target/release")).unwrap();
    let commands = block("local-commands").replace("127.0.0.1:8080", &address);
    // The trap stops dev-operator when a step fails. After the walkthrough's
    // own `kill %1`, the job may already be gone: that is no failure.
    let script = format!(
        "set -euo pipefail\n\
         cargo() {{ [[ \"$*\" == 'build --release' ]] || {{ echo \"unexpected: cargo $*\" >&2; return 97; }}; }}\n\
         trap 'kill %1 2>/dev/null || true' EXIT\n\
         {commands}\n"
    );

    let path = path_without_the_binary();
    // A step that never ends (a consumer that keeps polling) fails the
    // test instead of hanging it.
    let output = Command::new("timeout")
        .args(["120", "bash", "-c"])
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .env_remove("UID2_BUCKET_SYNC_DATABASE")
        .env_remove("UID2_BUCKET_SYNC_BASE_URL")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("simulated bucket table ready"),
        "dev-operator's logs stay out of the terminal: {stderr}"
    );

    // Its stdout line and its logs, both in the log file.
    let log = std::fs::read_to_string(dir.path().join("dev-operator.log")).unwrap();
    let listening: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("dev-operator listening on "))
        .collect();
    assert_eq!(
        listening,
        [format!(
            "dev-operator listening on http://{address} with 4096 buckets"
        )],
        "{log}"
    );
    assert!(log.contains("simulated bucket table ready"), "{log}");
    let mut lines = stdout.lines();
    let summary = lines.next().unwrap();
    assert!(
        summary.starts_with("sync: received 4096 rows (4096 new rotations, 0 already known); 4096 newly queued; high-water mark none -> "),
        "{stdout}"
    );
    assert!(
        stdout.contains("queue            4096 pending, 0 leased, 0 done, 0 dead"),
        "{stdout}"
    );
    let claimed: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(claimed.len(), 3, "{stdout}");
    for lease in &claimed {
        for field in ["bucket_id", "last_updated", "lease_id"] {
            assert!(lease[field].is_string(), "{lease}");
        }
    }

    // The consumer drained the rest and stopped by itself.
    let consumer_log = std::fs::read_to_string(dir.path().join("consumer.log")).unwrap();
    assert_eq!(
        consumer_log
            .lines()
            .filter(|l| l.starts_with("re-mapping identifiers of bucket "))
            .count(),
        4093,
        "{consumer_log}"
    );
    let stats: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("pending "))
        .take(4)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        stats,
        ["pending 0", "leased 3", "done 4093", "dead 0"],
        "{stdout}"
    );
    assert!(dir.path().join("local.db").exists());
}

#[test]
fn the_quickstart_config_and_the_example_config_load() {
    use uid2_bucket_sync::config::{LoadOptions, Settings};
    let dir = tempfile::tempdir().unwrap();
    let quickstart = README
        .split_once("cat > integ.toml <<'EOF'\n")
        .unwrap()
        .1
        .split_once("\nEOF\n")
        .unwrap()
        .0;
    for (name, text) in [
        ("integ.toml", quickstart.to_owned()),
        (
            "example.toml",
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let settings = Settings::load(&LoadOptions {
            config: Some(path),
            db: None,
        });
        assert!(settings.is_ok(), "{name}: {:?}", settings.err());
    }
}
