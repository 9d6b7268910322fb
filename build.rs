//! Embeds the git commit for `--version` and the build_info metric.
//! Builds from a source tarball (no git, no .git) say "unknown"; packagers
//! can supply the commit in UID2_BUCKET_SYNC_COMMIT instead.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo::rerun-if-env-changed=UID2_BUCKET_SYNC_COMMIT");
    // `--git-path` resolves correctly in worktrees, where .git is a file.
    // A ref that is packed has no file of its own: watch packed-refs too.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &reference]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("UID2_BUCKET_SYNC_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=UID2_BUCKET_SYNC_COMMIT={commit}");
}
