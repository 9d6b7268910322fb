//! The identity-map clients (`map_v3`, `map_v2`) against the simulated
//! operator over real HTTP on loopback: what each answer becomes, every
//! malformed answer the simulator can produce refused with its own error,
//! retries with a fresh envelope, and batching (count, type split, order).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Timelike, Utc};
use common::app::{API_KEY, CLIENT_SECRET, TestApp, spawn_app};
use uid2_bucket_sync::credentials::{ApiKey, ClientSecret};
use uid2_bucket_sync::identity::{IdentityHash, IdentityType};
use uid2_bucket_sync::operator::{
    ClientOptions, DocumentError, ElementProblem, MapAnswerError, MapError, MapLimits,
    OperatorClient, OperatorError, RetryPolicy, TransportError, UnmappedReason, V2Result,
    V3Mapping, V3Result, map_v2, map_v3,
};
use uid2_bucket_sync::simulator::{Endpoint, Fault, SimulatedOperator};

use IdentityType::{Email, Phone};

const BUCKETS: u32 = 300;

fn client(operator: &SimulatedOperator, retry: RetryPolicy) -> OperatorClient {
    OperatorClient::new(
        &operator.base_url(),
        ApiKey::new(API_KEY).unwrap(),
        ClientSecret::from_base64(CLIENT_SECRET).unwrap(),
        ClientOptions {
            request_timeout: Duration::from_secs(20),
            retry,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(30),
    }
}

fn limits(batch_size: usize, concurrency: usize) -> MapLimits {
    MapLimits::new(batch_size, concurrency).unwrap()
}

fn email(text: &str) -> (IdentityType, IdentityHash) {
    (Email, IdentityHash::of_email(text).unwrap())
}

fn phone(text: &str) -> (IdentityType, IdentityHash) {
    (Phone, IdentityHash::of_phone(text).unwrap())
}

/// `count` distinct identities, every third a phone.
fn many(count: usize) -> Vec<(IdentityType, IdentityHash)> {
    (0..count)
        .map(|n| {
            if n.is_multiple_of(3) {
                phone(&format!("+1555{n:07}"))
            } else {
                email(&format!("user{n}@example.com"))
            }
        })
        .collect()
}

fn midnight(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&at.date_naive().and_hms_opt(0, 0, 0).unwrap())
}

fn mapping(result: &V3Result) -> V3Mapping {
    match result {
        V3Result::Mapped(mapping) => *mapping,
        V3Result::Unmapped(reason) => panic!("expected a mapping, got {reason}"),
    }
}

async fn app() -> TestApp {
    spawn_app(BUCKETS).await
}

#[tokio::test]
async fn v3_maps_hashes_and_reports_opt_outs() {
    let app = app().await;
    let opted_out_by_handle = email("gone@example.com");
    app.operator.opt_out(&[opted_out_by_handle.1]);
    let identities = vec![
        email("validate@example.com"),
        phone("+00000000000"),
        phone("+12345678901"),
        email("optout@example.com"),
        opted_out_by_handle,
        email("user@example.com"),
    ];
    let results = map_v3(
        &client(&app.operator, RetryPolicy::none()),
        &identities,
        limits(100, 1),
    )
    .await
    .unwrap();

    assert_eq!(results.len(), identities.len());
    for index in [1, 3, 4] {
        assert_eq!(
            results[index],
            V3Result::Unmapped(UnmappedReason::OptOut),
            "{index}"
        );
    }
    let today = midnight(Utc::now());
    let uids: HashSet<_> = [0, 2, 5]
        .map(|index| {
            let mapped = mapping(&results[index]);
            // A future UTC midnight within 30 days.
            assert_eq!(mapped.refresh_from, midnight(mapped.refresh_from));
            assert!(mapped.refresh_from > today, "{index}");
            assert!(
                mapped.refresh_from <= today + TimeDelta::days(31),
                "{index}"
            );
            mapped.current
        })
        .into_iter()
        .collect();
    assert_eq!(uids.len(), 3, "distinct identities get distinct UID2s");

    // Only the hash arrays went out.
    let requests = app.operator.map_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].endpoint, Some(Endpoint::MapV3));
    let counts = requests[0].map_counts.unwrap();
    assert_eq!(
        (
            counts.email,
            counts.email_hash,
            counts.phone,
            counts.phone_hash
        ),
        (0, 4, 0, 2)
    );
}

#[tokio::test]
async fn v3_reports_the_previous_uid_and_refresh_time_after_a_rotation() {
    let app = app().await;
    let user = email("user@example.com");
    let bucket = app.operator.bucket_of(&user.1).unwrap();
    let client = client(&app.operator, RetryPolicy::none());
    let before = mapping(&map_v3(&client, &[user], limits(1, 1)).await.unwrap()[0]);

    let today = midnight(Utc::now());
    app.operator.rotate(&[&bucket], today);
    let after = mapping(&map_v3(&client, &[user], limits(1, 1)).await.unwrap()[0]);
    assert_ne!(after.current, before.current);
    assert_eq!(after.previous, Some(before.current));
    assert_eq!(after.refresh_from, today + TimeDelta::days(30));

    let soon = (Utc::now() + TimeDelta::hours(2))
        .with_nanosecond(0)
        .unwrap();
    app.operator.set_refresh_from(&[&bucket], soon);
    let set = mapping(&map_v3(&client, &[user], limits(1, 1)).await.unwrap()[0]);
    assert_eq!(set.refresh_from, soon);
}

#[tokio::test]
async fn v2_maps_hashes_to_uids_and_buckets_and_reports_opt_outs() {
    let app = app().await;
    let identities = vec![
        email("optout@example.com"),
        phone("+12345678901"),
        email("validate@example.com"),
        phone("+00000000000"),
    ];
    let client = client(&app.operator, RetryPolicy::none());
    let results = map_v2(&client, &identities, limits(100, 2)).await.unwrap();
    let v3 = map_v3(&client, &identities, limits(100, 1)).await.unwrap();

    assert_eq!(results[0], V2Result::Unmapped(UnmappedReason::OptOut));
    assert_eq!(results[3], V2Result::Unmapped(UnmappedReason::OptOut));
    for index in [1, 2] {
        assert_eq!(
            results[index],
            V2Result::Mapped {
                uid: mapping(&v3[index]).current,
                bucket_id: app.operator.bucket_of(&identities[index].1).unwrap(),
            },
            "{index}"
        );
    }
    // One request per identity type, each with only its hash array.
    let mut v2_requests: Vec<_> = app
        .operator
        .map_requests()
        .into_iter()
        .filter(|request| request.endpoint == Some(Endpoint::MapV2))
        .map(|request| request.map_counts.unwrap())
        .map(|counts| {
            (
                counts.email,
                counts.email_hash,
                counts.phone,
                counts.phone_hash,
            )
        })
        .collect();
    v2_requests.sort_unstable();
    assert_eq!(v2_requests, [(0, 0, 0, 2), (0, 2, 0, 0)]);
}

/// The error of a run whose only request meets `fault`.
async fn error_under(fault: Fault, v3: bool) -> MapError {
    let app = app().await;
    app.operator.inject(fault);
    let client = client(&app.operator, quick_retries());
    let identities = [email("validate@example.com"), email("user@example.com")];
    let error = if v3 {
        map_v3(&client, &identities, limits(10, 1))
            .await
            .unwrap_err()
    } else {
        map_v2(&client, &identities, limits(10, 1))
            .await
            .unwrap_err()
    };
    // A malformed answer would be malformed again: no retry.
    assert_eq!(app.operator.map_requests().len(), 1);
    assert!(!error.is_transient());
    assert_eq!(
        (error.request, error.first_input, error.identities),
        (0, 0, 2)
    );
    error
}

fn answer_problem(error: MapError) -> MapAnswerError {
    match error.source {
        OperatorError::InvalidResponse(problem) => problem,
        other => panic!("expected an invalid answer, got {other}"),
    }
}

#[tokio::test]
async fn a_short_v3_array_is_refused_naming_the_array_and_counts() {
    let error = error_under(Fault::ShortArray, true).await;
    assert_eq!(error.kind(), "invalid_response");
    assert_eq!(
        answer_problem(error),
        MapAnswerError::WrongLength {
            array: "email_hash",
            sent: 2,
            answered: 1
        }
    );
}

#[tokio::test]
async fn a_short_v2_answer_is_refused_naming_the_unanswered_input() {
    assert_eq!(
        answer_problem(error_under(Fault::ShortArray, false).await),
        MapAnswerError::Unanswered { input: 1, count: 1 }
    );
}

#[tokio::test]
async fn a_malformed_v3_uid_is_refused_naming_the_element() {
    let error = error_under(Fault::MalformedUid, true).await;
    let shown = error.to_string();
    assert_eq!(
        answer_problem(error),
        MapAnswerError::InvalidElement {
            array: "email_hash",
            index: 0,
            problem: ElementProblem::WrongUidLength {
                field: "u",
                bytes: 31
            },
        }
    );
    assert!(
        shown.ends_with(
            "operator's response is invalid: response \"body.email_hash[0]\": \"u\" decodes to \
             31 bytes, expected 32"
        ),
        "{shown}"
    );
}

#[tokio::test]
async fn a_malformed_v2_uid_is_refused_naming_the_element() {
    assert_eq!(
        answer_problem(error_under(Fault::MalformedUid, false).await),
        MapAnswerError::InvalidElement {
            array: "mapped",
            index: 0,
            problem: ElementProblem::WrongUidLength {
                field: "advertising_id",
                bytes: 31
            },
        }
    );
}

#[tokio::test]
async fn a_failure_status_inside_the_envelope_is_refused() {
    assert!(matches!(
        answer_problem(error_under(Fault::ClientErrorStatus, true).await),
        MapAnswerError::Document(DocumentError::StatusNotSuccess { status, .. }) if status == "client_error"
    ));
}

#[tokio::test]
async fn a_server_error_is_retried_with_a_fresh_envelope_on_both_map_endpoints() {
    for v3 in [true, false] {
        let app = app().await;
        app.operator.inject(Fault::Status {
            code: 500,
            retry_after: None,
        });
        let client = client(&app.operator, quick_retries());
        let identities = [phone("+12345678901")];
        if v3 {
            map_v3(&client, &identities, limits(10, 1)).await.unwrap();
        } else {
            map_v2(&client, &identities, limits(10, 1)).await.unwrap();
        }
        let requests = app.operator.map_requests();
        assert_eq!(
            requests
                .iter()
                .map(|request| request.status)
                .collect::<Vec<_>>(),
            [500, 200],
            "v3: {v3}"
        );
        assert!(requests[0].nonce.is_some());
        assert_ne!(requests[0].nonce, requests[1].nonce, "v3: {v3}");
        assert_eq!(requests[0].map_counts, requests[1].map_counts);
    }
}

#[tokio::test]
async fn a_persistent_server_error_fails_the_run_as_transient() {
    let app = app().await;
    app.operator.inject_always(Fault::Status {
        code: 503,
        retry_after: None,
    });
    let error = map_v3(
        &client(&app.operator, quick_retries()),
        &many(3),
        limits(10, 1),
    )
    .await
    .unwrap_err();
    assert!(error.is_transient());
    assert!(matches!(
        error.source,
        OperatorError::Transport(TransportError::ServerError { status: 503, .. })
    ));
    assert_eq!(app.operator.map_requests().len(), 3);
}

#[tokio::test]
async fn five_thousand_and_one_identities_take_two_requests() {
    let app = app().await;
    let identities = many(5_001);
    let results = map_v3(
        &client(&app.operator, RetryPolicy::none()),
        &identities,
        limits(5_000, 2),
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 5_001);
    assert!(
        results
            .iter()
            .all(|result| matches!(result, V3Result::Mapped(_)))
    );
    let mut sizes: Vec<usize> = app
        .operator
        .map_requests()
        .iter()
        .map(|request| request.map_counts.unwrap().total())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 5_000]);
}

#[tokio::test]
async fn a_small_batch_size_splits_the_run_and_results_keep_input_order() {
    let app = app().await;
    let identities = many(40);
    let client = client(&app.operator, RetryPolicy::none());
    // One request: the reference order.
    let whole = map_v3(&client, &identities, limits(5_000, 1))
        .await
        .unwrap();

    // The first request of the batched run is held back, so later ones
    // finish first.
    app.operator
        .inject(Fault::Delay(Duration::from_millis(300)));
    let batched = map_v3(&client, &identities, limits(7, 4)).await.unwrap();
    assert_eq!(batched, whole);
    let sizes: Vec<usize> = app.operator.map_requests()[1..]
        .iter()
        .map(|request| request.map_counts.unwrap().total())
        .collect();
    assert_eq!(sizes.len(), 6);
    assert!(sizes.iter().all(|&size| size <= 7), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 40);
}

#[tokio::test]
async fn v2_splits_by_type_and_batch_size_and_results_keep_input_order() {
    let app = app().await;
    let identities = many(25); // 9 phones, 16 emails
    let client = client(&app.operator, RetryPolicy::none());
    let v3 = map_v3(&client, &identities, limits(5_000, 1))
        .await
        .unwrap();

    app.operator
        .inject(Fault::Delay(Duration::from_millis(300)));
    let v2 = map_v2(&client, &identities, limits(4, 3)).await.unwrap();
    for (index, (v2, v3)) in v2.iter().zip(&v3).enumerate() {
        let V2Result::Mapped { uid, bucket_id } = v2 else {
            panic!("{index} unmapped");
        };
        assert_eq!(*uid, mapping(v3).current, "{index}");
        assert_eq!(
            Some(bucket_id.clone()),
            app.operator.bucket_of(&identities[index].1)
        );
    }
    let requests: Vec<_> = app.operator.map_requests()[1..]
        .iter()
        .map(|request| request.map_counts.unwrap())
        .collect();
    // Emails: 4 + 4 + 4 + 4; phones: 4 + 4 + 1.
    assert_eq!(requests.len(), 7);
    for counts in &requests {
        assert_eq!((counts.email, counts.phone), (0, 0));
        assert!(counts.email_hash == 0 || counts.phone_hash == 0);
        assert!(counts.total() <= 4);
    }
    assert_eq!(requests.iter().map(|c| c.email_hash).sum::<usize>(), 16);
    assert_eq!(requests.iter().map(|c| c.phone_hash).sum::<usize>(), 9);
}

#[tokio::test]
async fn no_identities_need_no_request() {
    let app = app().await;
    let client = client(&app.operator, RetryPolicy::none());
    assert!(
        map_v3(&client, &[], limits(10, 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        map_v2(&client, &[], limits(10, 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(app.operator.map_requests().is_empty());
}
