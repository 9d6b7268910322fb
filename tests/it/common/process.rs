//! Driving the real binary as a process: signals, bounded waits, its
//! output as text, and the check that no credential ever appears in it.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::app::{API_KEY, CLIENT_SECRET};

/// Runs `command` with `stdin` as its standard input (closed after it) and
/// collects its output.
pub fn output_with_stdin(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// Sends SIGTERM, as systemd does to stop the service.
pub fn terminate(child: &Child) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the child to exit, at most `limit`; returns its output.
pub fn wait_at_most(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let took = started.elapsed();
            return (child.wait_with_output().unwrap(), took);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Neither credential, nor the secret's decoded bytes as text, appears.
pub fn assert_no_secret(output: &str, context: &str) {
    assert!(
        !output.contains(API_KEY),
        "{context}: API key leaked:\n{output}"
    );
    assert!(
        !output.contains(CLIENT_SECRET),
        "{context}: client secret leaked:\n{output}"
    );
    let decoded =
        String::from_utf8_lossy(&base64_decode(CLIENT_SECRET).expect("the test secret is base64"))
            .into_owned();
    assert!(
        !output.contains(&decoded),
        "{context}: decoded secret leaked"
    );
}

pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

pub fn wait_for_stderr_line(child: &mut Child, wanted: &str, limit: Duration) -> String {
    let mut stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + limit;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            match stderr.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut seen = String::new();
    while !seen.contains(wanted) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("no {wanted:?} within {limit:?}; stderr so far:\n{seen}"),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || while receiver.recv().is_ok() {});
    seen
}
