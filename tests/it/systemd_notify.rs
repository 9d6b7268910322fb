//! `run` under systemd's notify protocol, with a datagram socket standing
//! in for systemd: READY once the database is ready, STATUS after a cycle,
//! WATCHDOG pings while running, STOPPING on SIGTERM, then exit 0.

use crate::common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::app::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn run_notifies_ready_status_watchdog_and_stopping() {
    let app = spawn_app(200).await;
    let socket_path = app.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let mut child = app
        .command()
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut messages: Vec<String> = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut stop_sent = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buffer) {
            messages.extend(
                String::from_utf8_lossy(&buffer[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        let seen = |prefix: &str| messages.iter().any(|m| m.starts_with(prefix));
        let watchdog_pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
        if !stop_sent && seen("STATUS=last sync ok") && watchdog_pings >= 2 {
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            stop_sent = true;
        }
        if stop_sent && seen("STOPPING=1") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}; messages: {messages:?}");

    let position = |wanted: &str| {
        messages
            .iter()
            .position(|m| m.starts_with(wanted))
            .unwrap_or_else(|| panic!("no {wanted} in {messages:?}"))
    };
    let ready = position("READY=1");
    let synced = position("STATUS=last sync ok");
    let stopping = position("STOPPING=1");
    assert!(ready < synced && synced < stopping, "{messages:?}");
    assert!(
        messages[synced].contains("200 received, 200 newly queued; queue 200 pending"),
        "{messages:?}"
    );
}
