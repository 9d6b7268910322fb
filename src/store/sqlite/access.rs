//! Who may open the database: the daemon and the batch jobs of its group.
//!
//! Several OS users share one SQLite file: the service user writes it, the
//! members of its group claim and ack. SQLite itself creates three files
//! (the database, `-wal`, `-shm`), and each must stay readable and writable
//! by the group whoever creates it first. So, by construction:
//! - the database file is created `0660`, whatever the umask; SQLite gives
//!   `-wal` and `-shm` the database file's mode when it creates them;
//! - a group-writable directory we own is made setgid, so files created in
//!   it by any member belong to the directory's group, not to the creator's
//!   own primary group (under systemd, `StateDirectoryMode=2770` does it,
//!   as the unit's `RestrictSUIDSGID=` forbids the service to).
//!
//! When access is wrong all the same, [`AccessProblem`] names the file, its
//! owner, group and mode, and who we are, instead of SQLite's "attempt to
//! write a readonly database".

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, Gid, Group, Uid, User, access, getegid, geteuid, getgroups};

/// Mode of a database file we create: the owner and its group read and write.
const DATABASE_MODE: u32 = 0o660;
const SETGID: u32 = 0o2000;

/// Why this process cannot use the database, with what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessProblem {
    /// What could not be done, e.g. "cannot write the database file".
    pub(crate) what: &'static str,
    pub(crate) path: PathBuf,
    /// Owner, group and mode of `path`, e.g. "owner uid2-bucket-sync, group
    /// uid2-bucket-sync, mode 0640".
    pub(crate) found: String,
    /// This process: user and groups.
    pub(crate) running_as: String,
}

impl fmt::Display for AccessProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}) while running as {}; every user of the database needs read and write \
             access to the database file, its -wal and -shm files and their directory: add the \
             user to the database's group, make the files group-writable (chmod g+rw) and the \
             directory setgid (chmod g+s) so that files created in it keep its group; see the \
             README's install steps",
            self.what,
            self.path.display(),
            self.found,
            self.running_as
        )
    }
}

impl std::error::Error for AccessProblem {}

/// The `-wal` and `-shm` files SQLite keeps beside the database in WAL mode.
pub(super) fn side_files(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// The directory a database path lives in.
pub(super) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates an empty database file `0660` unless it exists.
pub(super) fn create_shared(path: &Path) -> Result<(), AccessProblem> {
    let dir = directory_of(path);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DATABASE_MODE)
        .open(path)
    {
        // The umask took bits off the requested mode; put them back.
        Ok(file) => file
            .set_permissions(fs::Permissions::from_mode(DATABASE_MODE))
            .map_err(|_| problem("cannot set the mode of the new database file", path)),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) if error.kind() == ErrorKind::PermissionDenied => Err(problem(
            "cannot create the database file in the directory",
            dir,
        )),
        Err(_) => Err(problem("cannot create the database file", path)),
    }
}

/// Makes a group-writable directory we own setgid. Best effort: a directory
/// that isn't ours or isn't shared with a group is left as it is.
pub(super) fn share_directory(dir: &Path) {
    let Ok(meta) = fs::metadata(dir) else { return };
    let mode = meta.mode();
    let shared = mode & 0o070 == 0o070;
    if meta.uid() == geteuid().as_raw() && shared && mode & SETGID == 0 {
        match fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | SETGID)) {
            Ok(()) => tracing::info!(
                "made {} setgid so that files created in it by any user keep the group {}",
                dir.display(),
                group_name(meta.gid())
            ),
            Err(error) => tracing::debug!("cannot make {} setgid: {error}", dir.display()),
        }
    }
}

/// Refuses, before SQLite tries, a database this process could not write:
/// the file, an existing side file, or (when a side file must be created)
/// the directory.
pub(super) fn check_writable(path: &Path) -> Result<(), AccessProblem> {
    let read_write = AccessFlags::R_OK | AccessFlags::W_OK;
    if access(path, read_write).is_err() {
        return Err(problem("cannot write the database file", path));
    }
    let mut must_create = false;
    for side in side_files(path) {
        match fs::symlink_metadata(&side) {
            Ok(_) => {
                if access(&side, read_write).is_err() {
                    return Err(problem("cannot write SQLite's side file", &side));
                }
            }
            Err(_) => must_create = true,
        }
    }
    let dir = directory_of(path);
    if must_create && access(dir, AccessFlags::W_OK | AccessFlags::X_OK).is_err() {
        return Err(problem(
            "cannot create SQLite's -wal and -shm files in the directory",
            dir,
        ));
    }
    Ok(())
}

/// An [`AccessProblem`] about `path` as it is now.
pub(super) fn problem(what: &'static str, path: &Path) -> AccessProblem {
    AccessProblem {
        what,
        path: path.to_owned(),
        found: describe(path),
        running_as: running_as(),
    }
}

/// The first side file or directory that this process cannot write, for
/// explaining SQLite's "readonly" and "cannot open" errors after the fact.
pub(super) fn diagnose(path: &Path) -> AccessProblem {
    check_writable(path)
        .err()
        .unwrap_or_else(|| problem("cannot write the database", path))
}

fn describe(path: &Path) -> String {
    match fs::metadata(path) {
        Ok(meta) => format!(
            "owner {}, group {}, mode {:04o}",
            user_name(meta.uid()),
            group_name(meta.gid()),
            meta.mode() & 0o7777
        ),
        Err(error) => format!("cannot be inspected: {error}"),
    }
}

fn running_as() -> String {
    let uid = geteuid().as_raw();
    let mut groups: Vec<u32> = getgroups()
        .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_default();
    let primary = getegid().as_raw();
    if !groups.contains(&primary) {
        groups.insert(0, primary);
    }
    let names: Vec<String> = groups.into_iter().map(group_name).collect();
    format!("user {} (groups {})", user_name(uid), names.join(", "))
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}
