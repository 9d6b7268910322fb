//! `identities import|remove|export` as a data provider runs them: the real
//! binary on a real database file (INTERFACE.md, "Identity mapping").

use crate::common::TempDb;
use crate::common::process::output_with_stdin;

use std::process::{Command, Output};

use rusqlite::Connection;
use serde_json::Value;
use uid2_bucket_sync::store::SCHEMA_VERSION;

const BIN: &str = env!("CARGO_BIN_EXE_uid2-bucket-sync");
/// A raw email that must never appear in any output.
const SECRET_EMAIL: &str = "Jane.Doe+News@Example.com";

fn run(db: &TempDb, args: &[&str], stdin: Option<&str>) -> Output {
    let location = match &db.url {
        Some(url) => std::ffi::OsString::from(url),
        None => db.path.clone().into_os_string(),
    };
    output_with_stdin(
        Command::new(BIN)
            .arg("--db")
            .arg(location)
            .args(args)
            .env_remove("UID2_BUCKET_SYNC_CONFIG"),
        stdin.unwrap_or(""),
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn import_file(db: &TempDb, name: &str, content: &str) -> Output {
    let path = db.dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    run(db, &["identities", "import", path.to_str().unwrap()], None)
}

fn imported(db: &TempDb, name: &str, content: &str) -> String {
    let output = import_file(db, name, content);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

fn export_jsonl(db: &TempDb, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["identities", "export"];
    all.extend(args);
    let output = run(db, &all, None);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every row of the identity table (hash included) and the feed's length.
type Row = Vec<Option<String>>;

/// The hash column as lowercase hex, in either backend's SQL.
fn hex_hash(db: &TempDb) -> &'static str {
    match db.url {
        Some(_) => "encode(hash, 'hex')",
        None => "lower(hex(hash))",
    }
}

fn snapshot(db: &TempDb) -> (Vec<Row>, i64) {
    let rows = db.rows(&format!(
        "SELECT id, identity_type, {}, status, updated_at_ms FROM identity ORDER BY id",
        hex_hash(db)
    ));
    (rows, db.count("identity_change"))
}

const HEX_HASH: &str = "a7b4c8f0e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6";

fn seeded(db: TempDb) -> TempDb {
    let csv = format!(
        "id,email,phone,phone_hash\nu1,{SECRET_EMAIL},,\nu2,,+14155550100,\nu3,,,{HEX_HASH}\n"
    );
    assert_eq!(
        imported(&db, "seed.csv", &csv).trim(),
        "added 3, updated 0, unchanged 0, skipped 0"
    );
    db
}

fn a_csv_import_adds_unmapped_identities_that_export_shows_in_both_formats(db: TempDb) {
    let db = seeded(db);
    let records = export_jsonl(&db, &[]);
    let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["u1", "u2", "u3"]);
    assert_eq!(records[0]["identity_type"], "email");
    assert_eq!(records[1]["identity_type"], "phone");
    assert_eq!(records[2]["identity_type"], "phone");
    for record in &records {
        assert_eq!(record["status"], "unmapped");
        for field in [
            "uid2",
            "previous_uid2",
            "bucket_id",
            "refresh_from",
            "mapped_at",
        ] {
            assert!(record[field].is_null(), "{field} in {record}");
        }
    }
    let csv = run(&db, &["identities", "export", "--format", "csv"], None);
    assert_eq!(
        stdout(&csv).lines().collect::<Vec<_>>(),
        [
            "id,identity_type,uid2,previous_uid2,bucket_id,refresh_from,status,mapped_at",
            "u1,email,,,,,unmapped,",
            "u2,phone,,,,,unmapped,",
            "u3,phone,,,,,unmapped,",
        ]
    );
    // The stored hash is the normalized email's, not the raw text's.
    let hash = db.rows(&format!(
        "SELECT {} FROM identity WHERE id = 'u1'",
        hex_hash(&db)
    ));
    let expected = uid2_bucket_sync::identity::IdentityHash::of_email(SECRET_EMAIL).unwrap();
    let expected: String = expected
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash[0][0].as_deref(), Some(expected.as_str()));
}

fn a_jsonl_import_from_stdin_is_read_like_a_file(db: TempDb) {
    let input = "{\"id\":\"a\",\"email\":\"x@example.com\"}\n\n{\"id\":\"b\",\"phone\":\"+14155550101\",\"email\":null}\n";
    let output = run(
        &db,
        &["identities", "import", "-", "--format", "jsonl"],
        Some(input),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "added 2, updated 0, unchanged 0, skipped 0"
    );
    assert_eq!(export_jsonl(&db, &[]).len(), 2);
}

fn reimporting_the_same_records_writes_nothing(db: TempDb) {
    let db = seeded(db);
    let before = snapshot(&db);
    let csv = format!(
        "id,email,phone,phone_hash\nu1,{SECRET_EMAIL},,\nu2,,+14155550100,\nu3,,,{HEX_HASH}\n"
    );
    assert_eq!(
        imported(&db, "again.csv", &csv).trim(),
        "added 0, updated 0, unchanged 3, skipped 0"
    );
    assert_eq!(snapshot(&db), before);
}

fn a_new_value_for_an_id_makes_a_mapped_identity_unmapped_with_its_uid2s_cleared(db: TempDb) {
    let db = seeded(db);
    db.execute(
        "UPDATE identity SET status = 'mapped', uid2 = 'AAAA', previous_uid2 = 'BBBB',
             bucket_id = 'b1', refresh_from_ms = 1, mapped_at_ms = 1 WHERE id IN ('u1', 'u2')",
    );
    let output = imported(
        &db,
        "new.jsonl",
        "{\"id\":\"u1\",\"email\":\"someone.else@example.com\"}\n{\"id\":\"u2\",\"phone\":\"+14155550100\"}\n",
    );
    assert_eq!(output.trim(), "added 0, updated 1, unchanged 1, skipped 0");
    let records = export_jsonl(&db, &[]);
    assert_eq!(records[0]["status"], "unmapped");
    for field in [
        "uid2",
        "previous_uid2",
        "bucket_id",
        "refresh_from",
        "mapped_at",
    ] {
        assert!(records[0][field].is_null(), "{field}");
    }
    assert_eq!(records[1]["status"], "mapped");
    assert_eq!(records[1]["uid2"], "AAAA");
    assert_eq!(records[1]["refresh_from"], "1970-01-01T00:00:00.001Z");
    let mapped = export_jsonl(&db, &["--status", "mapped"]);
    assert_eq!(mapped.len(), 1);
    assert_eq!(mapped[0]["id"], "u2");
}

fn invalid_values_are_skipped_and_reported_by_line_without_the_value(db: TempDb) {
    let mut csv = String::from("id,email\n");
    for i in 0..15 {
        csv.push_str(&format!("bad{i},secret{i}@\n"));
    }
    csv.push_str("good,ok@example.com\n");
    let output = import_file(&db, "bad.csv", &csv);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        "added 1, updated 0, unchanged 0, skipped 15"
    );
    let err = stderr(&output);
    assert!(
        err.contains("line 2: skipped: not a valid email address: the domain is empty"),
        "{err}"
    );
    assert!(err.contains("line 11: skipped"), "{err}");
    assert!(!err.contains("line 12: skipped"), "{err}");
    assert!(err.contains("and 5 more skipped records"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

/// Each file is refused as a whole: the message names the line and the
/// reason, and the database is exactly as before.
fn every_refused_file_names_the_line_and_changes_nothing(db: TempDb) {
    let long_id = "x".repeat(257);
    let cases: [(&str, String, &str); 10] = [
        ("empty.csv", String::new(), "line 1: no header row"),
        (
            "unknown.csv",
            format!("id,mail\nz,{SECRET_EMAIL}\n"),
            "line 1: unknown column \"mail\"",
        ),
        (
            "noid.csv",
            format!("email\n{SECRET_EMAIL}\n"),
            "line 1: no `id` column",
        ),
        (
            "two.csv",
            format!("id,email,phone\nz,new@example.com,\ny,{SECRET_EMAIL},+14155550100\n"),
            "line 3: the record has two identifiers (email and phone)",
        ),
        (
            "none.csv",
            "id,email\nz,new@example.com\ny,\n".to_owned(),
            "line 3: the record has no identifier",
        ),
        (
            "dup.csv",
            format!("id,email\nz,new@example.com\nz,{SECRET_EMAIL}\n"),
            "line 3: duplicate id (also on line 2)",
        ),
        (
            "long.csv",
            format!("id,email\n{long_id},{SECRET_EMAIL}\n"),
            "line 2: the id is 257 bytes long, more than 256",
        ),
        (
            "notjson.jsonl",
            format!(
                "{{\"id\":\"z\",\"email\":\"new@example.com\"}}\n{{\"id\":\"y\",\"email\":\"{SECRET_EMAIL}\"\n"
            ),
            "line 2: the line is not JSON",
        ),
        (
            "number.jsonl",
            "{\"id\":\"z\",\"phone\":14155550100}\n".to_owned(),
            "line 1: \"phone\" is not a string",
        ),
        (
            "fields.csv",
            format!("id,email\nz,new@example.com\ny,{SECRET_EMAIL},extra\n"),
            "line 3: the record has 3 fields, the header 2",
        ),
    ];
    let db = seeded(db);
    let before = snapshot(&db);
    for (name, content, reason) in cases {
        let output = import_file(&db, name, &content);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(reason), "{name}: {err}");
        assert!(err.contains("nothing was imported"), "{name}: {err}");
        assert!(!err.contains(SECRET_EMAIL), "{name}: {err}");
        assert!(!err.contains("14155550100"), "{name}: {err}");
        assert!(stdout(&output).is_empty(), "{name}");
        assert_eq!(snapshot(&db), before, "{name}");
    }
}

fn remove_forgets_ids_given_as_arguments_or_on_stdin(db: TempDb) {
    let db = seeded(db);
    let output = run(&db, &["identities", "remove", "u1", "nobody"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "removed 1");
    let output = run(&db, &["identities", "remove", "-"], Some("u2\n\nu3\n"));
    assert_eq!(stdout(&output).trim(), "removed 2");
    assert!(export_jsonl(&db, &[]).is_empty());
}

fn no_raw_email_reaches_any_output(db: TempDb) {
    let db = seeded(db);
    let mut all = String::new();
    for args in [
        &["identities", "export"][..],
        &["identities", "export", "--format", "csv"],
        &["status"],
        &["status", "--json"],
    ] {
        let output = run(&db, args, None);
        all.push_str(&stdout(&output));
        all.push_str(&stderr(&output));
    }
    let lower = all.to_lowercase();
    assert!(!lower.contains("jane.doe"), "{all}");
    assert!(!lower.contains("janedoe@example.com"), "{all}");
}

fn status_json_counts_identities_by_status(db: TempDb) {
    let db = seeded(db);
    db.execute(
        "UPDATE identity SET status = 'mapped', uid2 = 'AAAA', refresh_from_ms = 0, mapped_at_ms = 0 \
         WHERE id = 'u1'",
    );
    db.execute("UPDATE identity SET status = 'optout' WHERE id = 'u2'");
    let output = run(&db, &["status", "--json"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        status["identities"],
        serde_json::json!({"total": 3, "mapped": 1, "unmapped": 1, "due": 2, "optout": 1, "invalid": 0})
    );
}

#[test]
fn a_schema_2_database_is_migrated_with_its_data_and_gains_the_identity_views() {
    let db = TempDb::new();
    {
        let conn = Connection::open(&db.path).unwrap();
        conn.execute_batch(include_str!("../../migrations/0001_initial.sql"))
            .unwrap();
        conn.execute_batch(include_str!("../../migrations/0002_database_meta.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO rotation_log VALUES ('b1', 1000, 2000);",
        )
        .unwrap();
    }
    let output = import_file(&db, "one.csv", "id,email\nu1,a@example.com\n");
    assert!(output.status.success(), "{}", stderr(&output));
    let conn = Connection::open(&db.path).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let bucket: String = conn
        .query_row("SELECT bucket_id FROM buckets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(bucket, "b1");
    let (id, status): (String, String) = conn
        .query_row("SELECT id, status FROM identities", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((id.as_str(), status.as_str()), ("u1", "unmapped"));
    let feed: i64 = conn
        .query_row("SELECT count(*) FROM identity_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(feed, 0);
}

/// The queries the re-map worker will run stay index lookups at any size.
#[test]
fn due_and_bucket_queries_are_answered_from_indexes() {
    let db = seeded(TempDb::new());
    let conn = Connection::open(&db.path).unwrap();
    let plan = |sql: &str| -> String {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("; ")
    };
    let due = plan(
        "SELECT id FROM identity WHERE status = 'unmapped'
         UNION ALL SELECT id FROM identity WHERE refresh_from_ms <= 1000",
    );
    assert!(due.contains("INDEX identity_unmapped"), "{due}");
    assert!(due.contains("INDEX identity_refresh"), "{due}");
    assert!(!due.contains("SCAN identity"), "{due}");
    let bucket = plan("SELECT id FROM identity WHERE bucket_id = 'b1' AND mapped_at_ms < 5");
    assert!(bucket.contains("INDEX identity_bucket"), "{bucket}");
}

/// A duplicate id is refused however far apart the two lines are (more
/// than a staging chunk here), and a file with a duplicate and a later bad
/// line is refused for the duplicate, the first problem in it.
fn duplicate_ids_far_apart_are_refused_naming_both_lines(db: TempDb) {
    let db = seeded(db);
    let before = snapshot(&db);
    let mut csv = String::from("id,email\n");
    for n in 0..12_000 {
        let id = if n == 11_000 { 42 } else { n };
        csv.push_str(&format!("d{id},user{n}@example.com\n"));
    }
    let output = import_file(&db, "far.csv", &csv);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 11002: duplicate id (also on line 44)"),
        "{err}"
    );
    assert_eq!(snapshot(&db), before);

    let csv = "id,email\nz,a@example.com\nz,b@example.com\ny,c@example.com,extra\n";
    let output = import_file(&db, "both.csv", csv);
    let err = stderr(&output);
    assert!(
        err.contains("line 3: duplicate id (also on line 2)"),
        "{err}"
    );
    assert_eq!(snapshot(&db), before);
}

crate::on_both_backends!(
    a_csv_import_adds_unmapped_identities_that_export_shows_in_both_formats,
    a_jsonl_import_from_stdin_is_read_like_a_file,
    reimporting_the_same_records_writes_nothing,
    a_new_value_for_an_id_makes_a_mapped_identity_unmapped_with_its_uid2s_cleared,
    invalid_values_are_skipped_and_reported_by_line_without_the_value,
    every_refused_file_names_the_line_and_changes_nothing,
    remove_forgets_ids_given_as_arguments_or_on_stdin,
    duplicate_ids_far_apart_are_refused_naming_both_lines,
    no_raw_email_reaches_any_output,
    status_json_counts_identities_by_status,
);
