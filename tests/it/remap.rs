//! The re-map worker as a data provider runs it: `identities import`, then
//! `remap` (and `run` with `mapping.enabled`), the real binary on a real
//! database file against the in-process simulated operator; `changes` and
//! `identities export` read the result (INTERFACE.md, "Identity mapping").

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use uid2_bucket_sync::identity::{IdentityHash, IdentityType};
use uid2_bucket_sync::operator::{MapLimits, V2Result, V3Result, map_v2, map_v3};
use uid2_bucket_sync::simulator::Fault;

use crate::common::Backend;
use crate::common::app::{TestApp, email, spawn_app};
use crate::common::process::{terminate, text, wait_at_most};

const V2: &str = "[mapping]\napi = \"v2\"\n";

fn hash(n: usize) -> IdentityHash {
    IdentityHash::of_email(&email(n)).unwrap()
}

fn run(app: &TestApp, args: &[&str]) -> Output {
    app.command().args(args).output().unwrap()
}

fn remap(app: &TestApp) -> String {
    let output = run(app, &["remap"]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn jsonl(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `identities export --format jsonl`, by id.
fn exported(app: &TestApp) -> BTreeMap<String, Value> {
    jsonl(&run(app, &["identities", "export", "--format", "jsonl"]))
        .into_iter()
        .map(|record| (record["id"].as_str().unwrap().to_owned(), record))
        .collect()
}

fn changes(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["changes", "--json"];
    all.extend(args);
    jsonl(&run(app, &all))
}

/// What the simulated operator answers for emails `0..count` now, asked
/// directly: the UID2 each identity should carry.
async fn operator_v3(app: &TestApp, count: usize) -> Vec<String> {
    let identities: Vec<_> = (0..count).map(|n| (IdentityType::Email, hash(n))).collect();
    let results = map_v3(&app.client(), &identities, MapLimits::new(5000, 4).unwrap())
        .await
        .unwrap();
    results
        .into_iter()
        .map(|result| match result {
            V3Result::Mapped(mapping) => mapping.current.to_base64(),
            V3Result::Unmapped(reason) => panic!("unmapped: {reason}"),
        })
        .collect()
}

/// v2 answers for emails `0..count`: (UID2, bucket) of each.
async fn operator_v2(app: &TestApp, count: usize) -> Vec<(String, String)> {
    let identities: Vec<_> = (0..count).map(|n| (IdentityType::Email, hash(n))).collect();
    let results = map_v2(&app.client(), &identities, MapLimits::new(5000, 4).unwrap())
        .await
        .unwrap();
    results
        .into_iter()
        .map(|result| match result {
            V2Result::Mapped { uid, bucket_id } => (uid.to_base64(), bucket_id),
            V2Result::Unmapped(reason) => panic!("unmapped: {reason}"),
        })
        .collect()
}

/// Makes these ids' refresh time a minute ago, as if their day had come.
fn make_refresh_due(app: &TestApp, ids: &[&str]) {
    let past = chrono::Utc::now().timestamp_millis() - 60_000;
    for id in ids {
        let updated = app.execute(&format!(
            "UPDATE identity SET refresh_from_ms = {past} WHERE id = '{id}'"
        ));
        assert_eq!(updated, 1);
    }
}

fn mapped_at(app: &TestApp) -> BTreeMap<String, Value> {
    exported(app)
        .into_iter()
        .map(|(id, record)| (id, record["mapped_at"].clone()))
        .collect()
}

async fn a_first_pass_maps_every_imported_identity_to_the_operators_uid2(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(30);
    let summary = remap(&app);
    assert!(
        summary.starts_with(
            "remap: 30 identities sent (v3), 30 changed, 0 unchanged, 0 opted out, 0 invalid, \
             1 requests"
        ),
        "{summary}"
    );
    let expected = operator_v3(&app, 30).await;
    let records = exported(&app);
    for (n, uid2) in expected.iter().enumerate() {
        let record = &records[&format!("id{n}")];
        assert_eq!(record["status"], "mapped");
        assert_eq!(record["uid2"], uid2.as_str(), "id{n}");
        assert!(record["refresh_from"].is_string(), "{record}");
        assert!(record["bucket_id"].is_null(), "{record}");
    }
    // One change record per identity: its first mapping.
    let feed = changes(&app, &[]);
    assert_eq!(feed.len(), 30);
    let seqs: Vec<i64> = feed.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    assert!(feed.iter().all(|c| c["previous_uid2"].is_null()));
}

async fn a_pass_with_nothing_due_sends_nothing_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(10);
    remap(&app);
    let sent = app.identities_sent();
    let before = mapped_at(&app);
    let summary = remap(&app);
    assert!(
        summary.starts_with("remap: 0 identities sent (v3), 0 changed"),
        "{summary}"
    );
    assert_eq!(app.identities_sent(), sent);
    assert_eq!(mapped_at(&app), before);
    assert_eq!(changes(&app, &[]).len(), 10);
}

async fn v3_sends_exactly_the_identities_whose_refresh_time_has_come(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(20);
    remap(&app);
    let before = mapped_at(&app);
    let sent = app.identities_sent();
    make_refresh_due(&app, &["id3", "id7", "id11"]);

    let summary = remap(&app);
    assert!(
        summary.starts_with("remap: 3 identities sent (v3), 0 changed, 3 unchanged"),
        "{summary}"
    );
    assert_eq!(app.identities_sent(), sent + 3);
    let after = mapped_at(&app);
    let remapped: BTreeSet<&str> = after
        .iter()
        .filter(|(id, at)| before[*id] != **at)
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(remapped, BTreeSet::from(["id11", "id3", "id7"]));
    // Same UID2: no change record.
    assert_eq!(changes(&app, &[]).len(), 20);
}

async fn v2_re_maps_exactly_the_identities_in_the_bucket_that_rotated(backend: Backend) {
    // Few buckets, so one holds several of the identities.
    let Some(app) = spawn_app(4).await.on(backend) else {
        return;
    };
    app.write_config(V2);
    app.import_emails(24);
    let summary = remap(&app);
    assert!(
        summary.starts_with("remap: 24 identities sent (v2)"),
        "{summary}"
    );
    let first = exported(&app);
    let answers = operator_v2(&app, 24).await;
    for (n, (uid2, bucket)) in answers.iter().enumerate() {
        let record = &first[&format!("id{n}")];
        assert_eq!(record["uid2"], uid2.as_str());
        assert_eq!(record["bucket_id"], bucket.as_str());
        assert!(record["refresh_from"].is_null());
    }
    // The sync cycle records the day's rotation of one bucket.
    let sync = run(&app, &["sync"]);
    assert!(sync.status.success(), "{}", text(&sync));
    let rotated = answers[0].1.clone();
    app.operator.rotate(&[&rotated], chrono::Utc::now());
    let sync = run(&app, &["sync"]);
    assert!(sync.status.success(), "{}", text(&sync));
    let in_bucket: BTreeSet<String> = answers
        .iter()
        .enumerate()
        .filter(|(_, (_, bucket))| *bucket == rotated)
        .map(|(n, _)| format!("id{n}"))
        .collect();
    assert!(in_bucket.len() > 1 && in_bucket.len() < 24, "{in_bucket:?}");

    let sent = app.identities_sent();
    let summary = remap(&app);
    let n = in_bucket.len();
    assert!(
        summary.starts_with(&format!(
            "remap: {n} identities sent (v2), {n} changed, 0 unchanged"
        )),
        "{summary}"
    );
    assert_eq!(app.identities_sent(), sent + n);
    let now = exported(&app);
    let answers = operator_v2(&app, 24).await;
    for (n, (uid2, _)) in answers.iter().enumerate() {
        let id = format!("id{n}");
        assert_eq!(now[&id]["uid2"], uid2.as_str(), "{id}");
        let changed = now[&id]["uid2"] != first[&id]["uid2"];
        assert_eq!(changed, in_bucket.contains(&id), "{id}");
        // v2 answers carry no previous UID2: a changed identity keeps the
        // one it had, an unchanged one keeps what it had before.
        let previous = if changed {
            &first[&id]["uid2"]
        } else {
            &first[&id]["previous_uid2"]
        };
        assert_eq!(&now[&id]["previous_uid2"], previous, "{id}");
    }
    // The feed shows the new UID2s with the ones they replace.
    let feed = changes(&app, &["--after", "24"]);
    let ids: BTreeSet<String> = feed
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, in_bucket);
    for change in &feed {
        let id = change["id"].as_str().unwrap();
        assert_eq!(change["previous_uid2"], first[id]["uid2"]);
        assert_eq!(change["uid2"], now[id]["uid2"]);
    }
    // Nothing is due any more.
    assert!(remap(&app).starts_with("remap: 0 identities sent (v2)"));
}

async fn every_malformed_answer_leaves_every_identity_as_it_was(backend: Backend) {
    for fault in [Fault::ShortArray, Fault::MalformedUid, Fault::CorruptTag] {
        let Some(app) = spawn_app(64).await.on(backend) else {
            return;
        };
        app.import_emails(12);
        app.operator.inject_always(fault.clone());
        let output = run(&app, &["remap"]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{fault:?}: {}",
            text(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr.lines().last().unwrap();
        assert!(
            line.starts_with("error: remap failed ("),
            "{fault:?}: {line}"
        );
        assert!(line.contains("hint:"), "{fault:?}: {line}");
        let records = exported(&app);
        assert!(
            records
                .values()
                .all(|r| r["status"] == "unmapped" && r["uid2"].is_null()),
            "{fault:?}"
        );
        assert!(changes(&app, &[]).is_empty(), "{fault:?}");
        let status = jsonl(&run(&app, &["status", "--json"]));
        let error = &status[0]["mapping"]["last_error"];
        assert!(error["kind"].is_string(), "{fault:?}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("hint:"),
            "{error}"
        );

        // Once the operator answers well, the next pass maps them all.
        app.operator.clear_faults();
        assert!(remap(&app).starts_with("remap: 12 identities sent (v3), 12 changed"));
    }
}

async fn an_opt_out_is_a_change_to_status_optout_without_a_uid2(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(5);
    remap(&app);
    let before = exported(&app);
    app.operator.opt_out(&[hash(2)]);
    make_refresh_due(&app, &["id2"]);
    let summary = remap(&app);
    assert!(
        summary.starts_with("remap: 1 identities sent (v3), 1 changed, 0 unchanged, 1 opted out"),
        "{summary}"
    );
    let record = &exported(&app)["id2"];
    assert_eq!(record["status"], "optout");
    assert!(record["uid2"].is_null());
    let feed = changes(&app, &["--after", "5"]);
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0]["id"], "id2");
    assert_eq!(feed[0]["status"], "optout");
    assert!(feed[0]["uid2"].is_null());
    assert_eq!(feed[0]["previous_uid2"], before["id2"]["uid2"]);
    // An opted-out identity is not due again by itself.
    assert!(remap(&app).starts_with("remap: 0 identities sent"));
}

async fn identities_mapped_with_v2_are_due_once_after_the_switch_to_v3(backend: Backend) {
    let Some(app) = spawn_app(16).await.on(backend) else {
        return;
    };
    app.write_config(V2);
    app.import_emails(8);
    remap(&app);
    app.write_config("");
    let status = jsonl(&run(&app, &["status", "--json"]));
    assert_eq!(status[0]["identities"]["due"], 8);
    assert!(remap(&app).starts_with("remap: 8 identities sent (v3)"));
    let records = exported(&app);
    assert!(
        records
            .values()
            .all(|r| r["refresh_from"].is_string() && r["bucket_id"].is_null())
    );
    assert!(remap(&app).starts_with("remap: 0 identities sent (v3)"));
}

async fn identities_mapped_with_v3_are_due_once_after_the_switch_to_v2(backend: Backend) {
    let Some(app) = spawn_app(16).await.on(backend) else {
        return;
    };
    app.import_emails(8);
    remap(&app);
    // Batches of three: the set is read in pages, across two passes.
    app.write_config(&format!("{V2}batch_size = 3\n"));
    let status = jsonl(&run(&app, &["status", "--json"]));
    assert_eq!(status[0]["identities"]["due"], 8);
    let output = run(&app, &["remap", "--limit", "5"]);
    assert!(output.status.success(), "{}", text(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.starts_with("remap: 5 identities sent (v2)"),
        "{summary}"
    );
    assert!(remap(&app).starts_with("remap: 3 identities sent (v2)"));
    let records = exported(&app);
    assert!(
        records
            .values()
            .all(|r| r["bucket_id"].is_string() && r["refresh_from"].is_null()),
        "{records:?}"
    );
    assert!(remap(&app).starts_with("remap: 0 identities sent (v2)"));
}

/// An identity given a new value or removed while its request is in flight
/// keeps what the import or the removal left: the answer, for a value it no
/// longer has, is dropped and counted; nothing stays claimed.
async fn an_answer_for_an_identity_changed_while_in_flight_is_dropped(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(5);
    app.operator.inject(Fault::Delay(Duration::from_secs(3)));
    let pass = app
        .command()
        .arg("remap")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The pass has started, and read its batch a moment after.
    let started = std::time::Instant::now();
    while app.rows("SELECT last_started_at FROM mapping_status")[0][0].is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no pass started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output = crate::common::process::output_with_stdin(
        app.command()
            .args(["identities", "import", "-", "--format", "csv"]),
        "id,email\nid0,someone.new@example.com\n",
    );
    assert!(output.status.success(), "{}", text(&output));
    let removed = run(&app, &["identities", "remove", "id1"]);
    assert!(removed.status.success(), "{}", text(&removed));
    let (output, _) = wait_at_most(pass, Duration::from_secs(30));
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        summary.starts_with("remap: 5 identities sent (v3), 3 changed")
            && summary.contains("2 changed or removed meanwhile (answer dropped)"),
        "{summary}"
    );
    let records = exported(&app);
    assert!(!records.contains_key("id1"));
    assert_eq!(records["id0"]["status"], "unmapped");
    assert!(records["id0"]["uid2"].is_null());
    assert_eq!(changes(&app, &[]).len(), 3);
    if backend == Backend::Postgres {
        assert_eq!(
            app.number("SELECT count(*) FROM identity WHERE lease_id IS NOT NULL"),
            0
        );
    }
    // The new value is mapped by the next pass.
    assert!(remap(&app).starts_with("remap: 1 identities sent (v3), 1 changed"));
}

async fn limit_sends_at_most_n_and_the_next_pass_sends_the_rest(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.write_config("[mapping]\nbatch_size = 4\nconcurrency = 2\n");
    app.import_emails(10);
    let output = run(&app, &["remap", "--limit", "7"]);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        summary.starts_with("remap: 7 identities sent (v3), 7 changed, 0 unchanged, 0 opted out, 0 invalid, 2 requests")
            && summary.contains("stopped before everything due was sent"),
        "{summary}"
    );
    let requests = app.operator.map_requests();
    assert!(
        requests
            .iter()
            .all(|r| r.map_counts.as_ref().unwrap().total() <= 4)
    );
    assert!(remap(&app).starts_with("remap: 3 identities sent (v3), 3 changed"));
    let status = jsonl(&run(&app, &["status", "--json"]));
    assert_eq!(status[0]["identities"]["mapped"], 10);
    assert_eq!(status[0]["identities"]["due"], 0);
    assert_eq!(status[0]["mapping"]["last_pass"]["sent"], 3);
}

async fn changes_after_a_saved_position_lists_only_later_records_up_to_the_limit(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.import_emails(6);
    remap(&app);
    let page = changes(&app, &["--after", "2", "--limit", "3"]);
    let seqs: Vec<i64> = page.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert!(changes(&app, &["--after", "6"]).is_empty());
    let table = run(&app, &["changes", "--limit", "1"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("seq  id"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    let bad = run(&app, &["changes", "--after", "-1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

async fn the_daemon_maps_new_identities_in_its_first_pass_and_stops_cleanly(backend: Backend) {
    let Some(app) = spawn_app(64).await.on(backend) else {
        return;
    };
    app.write_config("[mapping]\nenabled = true\ninterval = \"1h\"\n");
    app.import_emails(9);
    let mut child = app
        .command()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = crate::common::process::wait_for_stderr_line(
        &mut child,
        "re-map pass:",
        Duration::from_secs(20),
    );
    assert!(line.contains("9 identities sent (v3), 9 changed"), "{line}");
    terminate(&child);
    let (output, _) = wait_at_most(child, Duration::from_secs(10));
    assert!(output.status.success(), "{}", text(&output));
    let status = jsonl(&run(&app, &["status", "--json"]));
    assert_eq!(status[0]["identities"]["mapped"], 9);
    assert_eq!(status[0]["mapping"]["last_pass"]["changed"], 9);
    assert!(status[0]["mapping"]["last_success_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn mapping_settings_out_of_range_are_refused_naming_the_key() {
    let app = spawn_app(4).await;
    for (extra, key) in [
        ("[mapping]\nbatch_size = 0\n", "mapping.batch_size"),
        ("[mapping]\nbatch_size = 5001\n", "mapping.batch_size"),
        ("[mapping]\nconcurrency = 21\n", "mapping.concurrency"),
        ("[mapping]\napi = \"v4\"\n", "mapping.api"),
        ("[mapping]\nspread_over = \"25h\"\n", "mapping.spread_over"),
        ("[mapping]\ninterval = \"0s\"\n", "mapping.interval"),
    ] {
        app.write_config(extra);
        let output = run(&app, &["remap"]);
        assert_eq!(output.status.code(), Some(1), "{extra}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{extra}: {stderr}");
    }
}

/// On PostgreSQL the killed passes' claims outlive them: the identities
/// they held are skipped until their leases run out (53 s here: a 40 s
/// retry budget, a 3 s request limit and the commit's 10 s; long enough
/// that none runs out during the pass in between), then the next pass
/// sends them.
async fn kill_9_mid_pass_loses_only_batches_in_flight_and_the_next_pass_completes_the_rest(
    backend: Backend,
) {
    const COUNT: usize = 200_000;
    let Some(app) = spawn_app(1024).await.on(backend) else {
        return;
    };
    let config = app
        .config_text("[mapping]\nbatch_size = 2000\nconcurrency = 4\n")
        .replace("max_elapsed = \"20s\"", "max_elapsed = \"40s\"");
    std::fs::write(&app.config_path, config).unwrap();
    app.import_emails(COUNT);
    let expected = operator_v3(&app, COUNT).await;
    let mapped_count = || app.number("SELECT count(*) FROM identity WHERE status = 'mapped'");

    // Three passes killed at different depths, each after some commits.
    for round in 1..=3i64 {
        let before = mapped_count();
        let mut child = app
            .command()
            .arg("remap")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while mapped_count() < before + round * 6_000 {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the pass ended"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round {round}: too slow"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    if backend == Backend::Sqlite {
        assert_eq!(
            app.rows("PRAGMA integrity_check")[0][0].as_deref(),
            Some("ok")
        );
    }
    let check = || -> (usize, usize) {
        let (mut mapped, mut unmapped) = (0, 0);
        for row in app.rows("SELECT id, status, uid2 FROM identity") {
            let id = row[0].as_deref().unwrap();
            let n: usize = id.strip_prefix("id").unwrap().parse().unwrap();
            match row[1].as_deref().unwrap() {
                "mapped" => {
                    assert_eq!(row[2].as_deref(), Some(expected[n].as_str()), "{id}");
                    mapped += 1;
                }
                "unmapped" => unmapped += 1,
                other => panic!("{id}: {other}"),
            }
        }
        (mapped, unmapped)
    };
    let (mapped, unmapped) = check();
    assert!(
        mapped >= 6_000 * 6 && unmapped > 0,
        "{mapped} mapped, {unmapped} unmapped"
    );
    // Each committed mapping wrote its one change record, no more.
    let changes = app.number("SELECT count(DISTINCT id) FROM identity_change");
    let records = app.number("SELECT count(*) FROM identity_change");
    assert_eq!((changes, records), (mapped as i64, mapped as i64));

    if backend == Backend::Postgres {
        // The last killed pass's requests in flight left their claims.
        let held = app.number("SELECT count(*) FROM identity WHERE lease_id IS NOT NULL");
        assert!(held > 0, "no claims outlived the killed pass");
        let expires = app.number("SELECT max(lease_expires_ms) FROM identity");
        let wait = expires - chrono::Utc::now().timestamp_millis();
        assert!(wait <= 53_000, "a lease of {wait} ms");
        let summary = remap(&app);
        assert!(
            summary.starts_with(&format!(
                "remap: {} identities sent (v3)",
                unmapped - held as usize
            )),
            "while the claims hold: {summary}"
        );
        std::thread::sleep(Duration::from_millis(wait.max(0) as u64 + 100));
        let summary = remap(&app);
        assert!(
            summary.starts_with(&format!(
                "remap: {held} identities sent (v3), {held} changed"
            )),
            "after the leases ran out: {summary}"
        );
    } else {
        let summary = remap(&app);
        assert!(
            summary.starts_with(&format!(
                "remap: {unmapped} identities sent (v3), {unmapped} changed"
            )),
            "{summary}"
        );
    }
    assert_eq!(check(), (COUNT, 0));
    assert_eq!(
        app.number("SELECT count(*) FROM identity_change"),
        COUNT as i64
    );
}

crate::on_both_backends_async!(
    a_first_pass_maps_every_imported_identity_to_the_operators_uid2,
    a_pass_with_nothing_due_sends_nothing_and_changes_nothing,
    v3_sends_exactly_the_identities_whose_refresh_time_has_come,
    v2_re_maps_exactly_the_identities_in_the_bucket_that_rotated,
    every_malformed_answer_leaves_every_identity_as_it_was,
    an_opt_out_is_a_change_to_status_optout_without_a_uid2,
    identities_mapped_with_v2_are_due_once_after_the_switch_to_v3,
    identities_mapped_with_v3_are_due_once_after_the_switch_to_v2,
    limit_sends_at_most_n_and_the_next_pass_sends_the_rest,
    an_answer_for_an_identity_changed_while_in_flight_is_dropped,
    changes_after_a_saved_position_lists_only_later_records_up_to_the_limit,
    the_daemon_maps_new_identities_in_its_first_pass_and_stops_cleanly,
    kill_9_mid_pass_loses_only_batches_in_flight_and_the_next_pass_completes_the_rest,
);
