//! A throwaway PostgreSQL server for the suite: one per test process,
//! started on first use from the Debian `postgresql` package (initdb into
//! a temporary directory, a free loopback port), killed when the process
//! exits. Each test gets a database of its own.
//!
//! Where PostgreSQL is not installed, the PostgreSQL half of the suite does
//! not run and says so on the terminal; with
//! `UID2_BUCKET_SYNC_REQUIRE_POSTGRES=1` (as `.ci/run` sets) that is a
//! failure instead.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser's password; the server listens on loopback only.
const PASSWORD: &str = "throwaway-test-password";
const REQUIRE: &str = "UID2_BUCKET_SYNC_REQUIRE_POSTGRES";
const DIR_PREFIX: &str = "uid2-bucket-sync-pg-";

pub struct PgServer {
    port: u16,
}

static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server, started on first use; `None` when PostgreSQL is missing
/// and not required.
pub fn server() -> Option<&'static PgServer> {
    SERVER
        .get_or_init(|| match find_binaries() {
            Some(bin) => Some(PgServer::start(&bin)),
            None if std::env::var_os(REQUIRE).is_some_and(|v| v == "1") => panic!(
                "{REQUIRE}=1 but no PostgreSQL server binaries were found under \
                 /usr/lib/postgresql/*/bin: install the Debian package postgresql"
            ),
            None => {
                // Straight to the terminal: the test harness captures
                // eprintln! of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** PostgreSQL is not installed: the PostgreSQL half of the suite DID NOT \
                     RUN. Install the Debian package postgresql (.ci/run does). ***\n"
                );
                None
            }
        })
        .as_ref()
}

/// A new, empty database on the shared server, as a URL; `None` when
/// PostgreSQL is missing and not required.
pub fn fresh_database() -> Option<String> {
    // Also from async tests, where the blocking client may not run.
    super::on_own_thread(new_database)
}

fn new_database() -> Option<String> {
    let server = server()?;
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(&server.url("postgres"), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    Some(server.url(&name))
}

impl PgServer {
    /// The URL of database `name`, as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    fn start(bin: &Path) -> Self {
        remove_stale_directories();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let owner = ServerUser::for_this_process();
        owner.give(&dir);
        owner.give(&pwfile);

        let initdb = owner
            .command(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        spawn_server(&owner, bin, &data, &dir, port);
        let server = Self { port };
        server.wait_until_ready(&dir);
        server
    }

    fn wait_until_ready(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => panic!(
                    "the test PostgreSQL server did not start: {error}; its log: {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// Starts the server from a thread that never ends, with the parent-death
/// signal set: the server dies with this process, never with a test thread.
fn spawn_server(owner: &ServerUser, bin: &Path, data: &Path, dir: &Path, port: u16) {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut command = owner.command(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGQUIT)
                .map_err(std::io::Error::from)
        });
    }
    let (started, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = command.spawn();
        let failed = child.as_ref().err().map(ToString::to_string);
        started.send(failed).unwrap();
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
        loop {
            std::thread::park();
        }
    });
    if let Some(error) = wait.recv().unwrap() {
        panic!("cannot start the test PostgreSQL server: {error}");
    }
}

/// PostgreSQL refuses to run as root: as root, the server runs as the
/// `postgres` user the Debian package creates.
struct ServerUser(Option<(nix::unistd::Uid, nix::unistd::Gid)>);

impl ServerUser {
    fn for_this_process() -> Self {
        if !nix::unistd::geteuid().is_root() {
            return Self(None);
        }
        let user = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("running as root needs the postgres user of the Debian package");
        Self(Some((user.uid, user.gid)))
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            nix::unistd::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.0 {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }
}

/// The newest installed server's binaries.
fn find_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Directories of earlier runs whose process is gone (a killed run leaves
/// its directory; its server died with it).
fn remove_stale_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
