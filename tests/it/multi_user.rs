//! The daemon and batch jobs as different OS users sharing one database,
//! as the README's install sets them up: a service user whose primary group
//! is the shared group (umask 0007, as the unit's `UMask=`), and consumers
//! who are members of that group with their own primary group (umask 0022,
//! as a login shell). Needs root to create throwaway users; anywhere else
//! every test here says so loudly and passes without running.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use chrono::Utc;
use common::app::{TestApp, spawn_app};
use common::process::output_with_stdin;
use rusqlite::Connection;

const BUCKETS: u32 = 64;

/// Throwaway users and a group, removed on drop.
struct Users {
    group: String,
    service: String,
    consumers: [String; 2],
}

impl Users {
    fn create() -> Self {
        let tag: String = format!("{:06x}", rand_tag());
        let users = Self {
            group: format!("u2bs-{tag}"),
            service: format!("u2bs-svc-{tag}"),
            consumers: [format!("u2bs-c1-{tag}"), format!("u2bs-c2-{tag}")],
        };
        run_ok(Command::new("groupadd").args(["--system", &users.group]));
        run_ok(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--gid",
            &users.group,
            "--shell",
            "/usr/sbin/nologin",
            &users.service,
        ]));
        for consumer in &users.consumers {
            run_ok(Command::new("useradd").args([
                "--no-create-home",
                "--user-group",
                "--groups",
                &users.group,
                "--shell",
                "/bin/sh",
                consumer,
            ]));
        }
        users
    }

    fn all(&self) -> [&str; 3] {
        [&self.service, &self.consumers[0], &self.consumers[1]]
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for user in self.all() {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

fn rand_tag() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff
}

fn run_ok(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!(
        "SKIPPED {test}: creating throwaway OS users needs root (CI runs as root); \
         multi-user database access is NOT verified by this run"
    );
    true
}

/// `program args…` as `user` with its groups from /etc/group and `umask`.
fn as_user(user: &str, umask: &str, program: &Path, args: &[&str]) -> Command {
    let account = nix::unistd::User::from_name(user).unwrap().unwrap();
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={}", account.uid),
            &format!("--regid={}", account.gid),
            "--init-groups",
            "--",
            "/bin/sh",
            "-c",
            &format!("umask {umask} && exec \"$0\" \"$@\""),
        ])
        .arg(program)
        .args(args)
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .env_remove("UID2_BUCKET_SYNC_DATABASE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET");
    command
}

/// A copy of the binary in the test's world-traversable directory: the
/// build's own may sit below a directory other users cannot enter (a clone
/// in a `mktemp -d`).
fn shared_binary(app: &TestApp) -> PathBuf {
    let copy = app.dir.path().join("uid2-bucket-sync");
    std::fs::copy(env!("CARGO_BIN_EXE_uid2-bucket-sync"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// A state directory as systemd's `StateDirectory=` with
/// `StateDirectoryMode=2770` makes it, in a world-traversable temp dir.
fn state_dir(app: &TestApp, users: &Users, mode: u32) -> PathBuf {
    std::fs::set_permissions(app.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = app.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    run_ok(
        Command::new("chown")
            .arg(format!("{}:{}", users.service, users.group))
            .arg(&state),
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(mode)).unwrap();
    state
}

/// The config the service reads: the test's, made readable by everyone
/// (it holds only test credentials), pointing at `db`.
fn service_config(app: &TestApp, db: &Path) -> PathBuf {
    let text = app.config_text("").replace(
        &app.db_path.display().to_string(),
        &db.display().to_string(),
    );
    let path = app.dir.path().join("service.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn sync_as_service(binary: &Path, users: &Users, config: &Path) -> Output {
    as_user(
        &users.service,
        "0007",
        binary,
        &["--config", config.to_str().unwrap(), "sync"],
    )
    .output()
    .unwrap()
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Claims up to 5 items as `user` and acks them through stdin; returns
/// how many were claimed.
fn claim_and_ack(binary: &Path, user: &str, db: &Path) -> usize {
    let db = db.to_str().unwrap();
    let claim = as_user(
        user,
        "0022",
        binary,
        &[
            "--db", db, "queue", "claim", "--limit", "5", "--lease", "5m", "--json",
        ],
    )
    .output()
    .unwrap();
    assert_success(&format!("queue claim as {user}"), &claim);
    let ids: Vec<String> = String::from_utf8(claim.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["lease_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let ack = output_with_stdin(
        &mut as_user(user, "0022", binary, &["--db", db, "queue", "ack"]),
        &format!("{}\n", ids.join("\n")),
    );
    assert_success(&format!("queue ack as {user}"), &ack);
    ids.len()
}

/// A documented-SQL reader as `user` that holds the database open (and so
/// its -wal and -shm files, which it creates if it is first) until dropped.
struct Holder(Child);

impl Holder {
    fn start(user: &str, db: &Path) -> Self {
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1])\n\
                      c.execute('SELECT count(*) FROM remap_queue').fetchall()\n\
                      print('open', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = as_user(
            user,
            "0022",
            Path::new("python3"),
            &["-c", script, db.to_str().unwrap()],
        )
        // Not a python under root's home, which other users cannot reach.
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "open", "the SQL reader as {user} did not open");
        Self(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn owner_group_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

fn gid_of(group: &str) -> u32 {
    nix::unistd::Group::from_name(group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw()
}

/// Throwaway users, a simulated operator, and a database in a state
/// directory of `mode` that the service user has synced once.
struct Shared {
    users: Users,
    app: TestApp,
    binary: PathBuf,
    state: PathBuf,
    db: PathBuf,
    config: PathBuf,
}

impl Shared {
    async fn set_up(mode: u32) -> Self {
        let users = Users::create();
        let app = spawn_app(BUCKETS).await;
        let state = state_dir(&app, &users, mode);
        let db = state.join("buckets.db");
        let config = service_config(&app, &db);
        let binary = shared_binary(&app);
        let shared = Self {
            users,
            app,
            binary,
            state,
            db,
            config,
        };
        assert_success("the first sync as the service user", &shared.sync());
        shared
    }

    /// Checkpoints the WAL into the database and removes -wal and -shm, as
    /// the last connection to close does after any command but `sync`
    /// (whose last commit is synced, so it skips that checkpoint): the state
    /// in which the next opener creates the side files.
    fn without_side_files(&self) {
        // A connection opens the WAL, and checkpoints it as it closes, only
        // once it has read something.
        let conn = Connection::open(&self.db).unwrap();
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .unwrap();
        drop(conn);
        for side in ["-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{side}", self.db.display()));
            assert!(!path.exists(), "{} is still there", path.display());
        }
    }

    fn sync(&self) -> Output {
        tokio::task::block_in_place(|| sync_as_service(&self.binary, &self.users, &self.config))
    }

    /// `uid2-bucket-sync --db DB args…` as `user`.
    fn consumer_command(&self, user: &str, args: &[&str]) -> Output {
        let mut all = vec!["--db", self.db.to_str().unwrap()];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| as_user(user, "0022", &self.binary, &all).output().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_and_two_group_members_share_the_database_whoever_opens_it_first() {
    if skip_unless_root(
        "the_daemon_and_two_group_members_share_the_database_whoever_opens_it_first",
    ) {
        return;
    }
    // The service creates the database.
    let shared = Shared::set_up(0o2770).await;
    let (users, db) = (&shared.users, &shared.db);
    let group = gid_of(&users.group);
    let (_, db_group, db_mode) = owner_group_mode(db);
    assert_eq!((db_group, db_mode), (group, 0o660), "the new database file");

    let mut claimed = 0;
    // Each of the three opens the database first in turn and holds it
    // (creating -wal and -shm) while the others sync, claim and ack.
    for (round, first_opener) in users.all().into_iter().enumerate() {
        shared.without_side_files();
        let holder = Holder::start(first_opener, db);
        for side in ["-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{side}", db.display()));
            let (_, side_group, side_mode) = owner_group_mode(&path);
            assert_eq!(
                (side_group, side_mode),
                (group, 0o660),
                "{side} created by {first_opener} (round {round})"
            );
        }
        shared.app.operator.rotate_random(3, Utc::now());
        assert_success(
            &format!("sync as the service (round {round})"),
            &shared.sync(),
        );
        for consumer in &users.consumers {
            claimed += tokio::task::block_in_place(|| claim_and_ack(&shared.binary, consumer, db));
        }
        drop(holder);
    }
    assert!(claimed >= 25, "only {claimed} items were claimed and acked");
}

#[tokio::test(flavor = "multi_thread")]
async fn side_files_with_a_foreign_group_are_named_with_owner_group_and_mode() {
    if skip_unless_root("side_files_with_a_foreign_group_are_named_with_owner_group_and_mode") {
        return;
    }
    let shared = Shared::set_up(0o0770).await;
    // The daemon made its directory setgid on the way; undo it to get the
    // layout that broke installs: a plain 0770 directory, where a
    // consumer's SQL reader creates -wal and -shm with its own group.
    assert_eq!(
        owner_group_mode(&shared.state).2,
        0o2770,
        "the daemon's directory"
    );
    std::fs::set_permissions(&shared.state, std::fs::Permissions::from_mode(0o0770)).unwrap();
    shared.without_side_files();
    let consumer = &shared.users.consumers[0];
    let _holder = Holder::start(consumer, &shared.db);

    let sync = shared.sync();
    assert_eq!(sync.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&sync.stderr);
    let expected = format!(
        "cannot write SQLite's side file {}-wal (owner {consumer}, group {consumer}, mode 0660) \
         while running as user {}",
        shared.db.display(),
        shared.users.service
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_outside_the_group_is_told_which_file_it_cannot_write_and_why() {
    if skip_unless_root("a_user_outside_the_group_is_told_which_file_it_cannot_write_and_why") {
        return;
    }
    let shared = Shared::set_up(0o2775).await;
    // Readable by all, writable by the group: an outsider can read but not claim.
    std::fs::set_permissions(&shared.db, std::fs::Permissions::from_mode(0o664)).unwrap();
    let output = shared.consumer_command(
        "nobody",
        &["queue", "claim", "--limit", "1", "--lease", "1m"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "cannot write the database file {} (owner {}, group {}, mode 0664) while running as user nobody",
        shared.db.display(),
        shared.users.service,
        shared.users.group
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("readonly database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_the_user_cannot_write_is_named_instead_of_readonly_database() {
    if skip_unless_root("a_directory_the_user_cannot_write_is_named_instead_of_readonly_database") {
        return;
    }
    let shared = Shared::set_up(0o2775).await;
    // The file is writable by everyone, its directory is not: SQLite
    // cannot create -wal and -shm there.
    std::fs::set_permissions(&shared.db, std::fs::Permissions::from_mode(0o666)).unwrap();
    shared.without_side_files();
    let output = shared.consumer_command("nobody", &["queue", "stats"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "cannot create SQLite's -wal and -shm files in the directory {} (owner {}, group {}, \
         mode 2775) while running as user nobody",
        shared.state.display(),
        shared.users.service,
        shared.users.group
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        !stderr.contains("readonly") && !stderr.contains("1544"),
        "{stderr}"
    );
}
