//! The queue's promises (INTERFACE.md, "Queue semantics"), one or more
//! tests each, on both backends: real database files and a real
//! PostgreSQL server (`on_both_backends!` at the end).

use crate::common;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::Duration;

use common::{TempDb, ack_all, at, claim, lease_for, lease_ids, rotation};
use uid2_bucket_sync::queue::{
    AckOutcome, ClaimRequest, FailOutcome, Lease, LeaseRefusal, ListFilter, MAX_CLAIM_LIMIT,
    MAX_ERROR_BYTES, MAX_WORKER_BYTES, QueueEntry, QueueError, QueueOptions, QueueState, Reclaimed,
    RemapQueue,
};
use uid2_bucket_sync::store::Store;

fn entry(store: &Store, bucket: &str) -> QueueEntry {
    store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap()
        .into_iter()
        .find(|e| e.subject.bucket_id() == Some(bucket))
        .unwrap_or_else(|| panic!("no entry for {bucket}"))
}

fn entries(store: &Store) -> usize {
    store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap()
        .len()
}

// ---- one entry per bucket --------------------------------------------------------

fn a_rotation_while_pending_coalesces_into_one_entry_with_the_newer_version(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let summary = store
        .ingest(vec![rotation("a", at(2, 0, 0))], at(2, 1, 0))
        .unwrap();
    assert_eq!(summary.coalesced, 1);
    assert_eq!(summary.newly_queued, 0);

    assert_eq!(entries(&store), 1);
    let a = entry(&store, "a");
    assert_eq!(a.state, QueueState::Pending);
    assert_eq!(a.version, at(2, 0, 0));
    assert_eq!(a.generation, 1);
    // It keeps its place in line.
    assert_eq!(a.due_at, at(1, 1, 0));

    let leases = claim(&store, 10, lease_for(10), at(2, 2, 0));
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].version, at(2, 0, 0));
}

fn a_rotation_while_leased_is_pending_again_after_the_ack_with_the_newer_version(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let first = claim(&store, 10, lease_for(30), at(1, 2, 0));
    assert_eq!(first[0].version, at(1, 0, 0));

    let summary = store
        .ingest(vec![rotation("a", at(1, 12, 0))], at(1, 2, 10))
        .unwrap();
    assert_eq!(summary.requeued_after_lease, 1);
    // Still one entry, still leased, the newer version waiting.
    assert_eq!(entries(&store), 1);
    let a = entry(&store, "a");
    assert_eq!(a.state, QueueState::Leased);
    assert_eq!(a.next_version, Some(at(1, 12, 0)));
    assert!(claim(&store, 10, lease_for(30), at(1, 2, 11)).is_empty());

    // The ack of the old lease does not swallow the new rotation.
    let outcomes = queue.ack(&lease_ids(&first), at(1, 2, 20)).unwrap();
    assert_eq!(outcomes, vec![AckOutcome::AckedNewerPending]);
    let a = entry(&store, "a");
    assert_eq!(a.state, QueueState::Pending);
    assert_eq!(a.version, at(1, 12, 0));
    assert_eq!(a.generation, 2);
    assert_eq!(a.attempts, 0);
    assert_eq!(a.due_at, at(1, 2, 10));

    let second = claim(&store, 10, lease_for(30), at(1, 3, 0));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].version, at(1, 12, 0));
    assert_eq!((second[0].generation, second[0].attempt), (2, 1));
    ack_all(&store, &second, at(1, 3, 1));
    assert_eq!(entry(&store, "a").state, QueueState::Done);
}

fn a_rotation_while_leased_is_pending_again_when_the_lease_expires(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let first = claim(&store, 10, lease_for(10), at(1, 2, 0));
    store
        .ingest(vec![rotation("a", at(1, 12, 0))], at(1, 2, 5))
        .unwrap();

    let second = claim(&store, 10, lease_for(10), at(1, 2, 10));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].version, at(1, 12, 0));
    assert_eq!((second[0].generation, second[0].attempt), (2, 1));

    let outcomes = store
        .queue(QueueOptions::default())
        .ack(&lease_ids(&first), at(1, 2, 11))
        .unwrap();
    assert_eq!(outcomes, vec![AckOutcome::Refused(LeaseRefusal::NotHeld)]);
    assert_eq!(entry(&store, "a").state, QueueState::Leased);
}

fn a_rotation_while_leased_survives_a_failed_lease(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let first = claim(&store, 10, lease_for(10), at(1, 2, 0));
    store
        .ingest(vec![rotation("a", at(1, 12, 0))], at(1, 2, 1))
        .unwrap();
    let outcomes = store
        .queue(QueueOptions::default())
        .fail(
            &lease_ids(&first),
            "identity map answered 500",
            None,
            at(1, 2, 2),
        )
        .unwrap();
    assert_eq!(outcomes, vec![FailOutcome::NewerPending]);
    let a = entry(&store, "a");
    assert_eq!(
        (a.state, a.version, a.generation, a.attempts),
        (QueueState::Pending, at(1, 12, 0), 2, 0)
    );
}

fn a_rotation_after_done_is_a_new_generation_with_attempts_reset(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let leases = claim(&store, 10, lease_for(10), at(1, 2, 0));
    ack_all(&store, &leases, at(1, 2, 1));

    let summary = store
        .ingest(vec![rotation("a", at(2, 0, 0))], at(2, 1, 0))
        .unwrap();
    assert_eq!(summary.newly_queued, 1);
    let a = entry(&store, "a");
    assert_eq!(
        (a.state, a.version, a.generation, a.attempts, a.done_at),
        (QueueState::Pending, at(2, 0, 0), 2, 0, None)
    );
    assert_eq!(a.due_at, at(2, 1, 0));
}

fn a_rotation_of_a_dead_entry_makes_it_pending_as_a_new_generation(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions {
        max_attempts: 1,
        ..QueueOptions::default()
    });
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let leases = claim(&store, 10, lease_for(10), at(1, 2, 0));
    assert_eq!(
        queue
            .fail(&lease_ids(&leases), "boom", None, at(1, 2, 1))
            .unwrap(),
        vec![FailOutcome::Dead]
    );

    let summary = store
        .ingest(vec![rotation("a", at(2, 0, 0))], at(2, 1, 0))
        .unwrap();
    assert_eq!(summary.newly_queued, 1);
    let a = entry(&store, "a");
    assert_eq!(
        (a.state, a.version, a.generation, a.attempts),
        (QueueState::Pending, at(2, 0, 0), 2, 0)
    );
}

// ---- claims and leases -------------------------------------------------------------

fn claims_take_the_longest_waiting_first_each_item_with_its_own_lease(db: TempDb) {
    let store = db.open();
    store
        .ingest(
            vec![
                rotation("late-1", at(1, 0, 0)),
                rotation("late-2", at(1, 0, 0)),
            ],
            at(2, 0, 0),
        )
        .unwrap();
    store
        .ingest(
            vec![
                rotation("early-1", at(1, 0, 0)),
                rotation("early-2", at(1, 0, 0)),
            ],
            at(1, 12, 0),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // (The second response was observed earlier: a clock is not a mark.)
    let leases = claim(&store, 3, lease_for(15), at(2, 1, 0));
    let claimed: Vec<_> = leases
        .iter()
        .map(|l| l.subject.bucket_id().unwrap())
        .collect();
    assert_eq!(claimed, ["early-1", "early-2", "late-1"]);
    let ids: HashSet<_> = lease_ids(&leases).into_iter().collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.len() == 32));
    for lease in &leases {
        assert_eq!(lease.expires_at, at(2, 1, 15));
        assert_eq!(lease.attempt, 1);
    }
    let rest = claim(&store, 10, lease_for(15), at(2, 1, 1));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].subject.bucket_id(), Some("late-2"));
}

fn a_claim_never_hands_out_an_item_that_is_leased(db: TempDb) {
    let store = db.open();
    let response = (0..50)
        .map(|i| rotation(&format!("b{i:02}"), at(1, 0, 0)))
        .collect();
    store.ingest(response, at(1, 1, 0)).unwrap();
    let mut seen = HashSet::new();
    for minute in 0..6 {
        for lease in claim(&store, 10, lease_for(60), at(1, 2, minute)) {
            assert!(seen.insert(lease.subject.key.clone()), "{lease:?}");
        }
    }
    assert_eq!(seen.len(), 50);
}

fn a_claim_of_nothing_pending_is_empty(db: TempDb) {
    let store = db.open();
    assert!(claim(&store, 10, lease_for(1), at(1, 0, 0)).is_empty());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    assert!(claim(&store, 0, lease_for(1), at(1, 2, 0)).is_empty());
}

fn a_lease_must_last_a_sensible_time(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    for lease in [Duration::ZERO, Duration::from_secs(11 * 366 * 24 * 3600)] {
        let error = queue
            .claim(
                &ClaimRequest {
                    limit: 1,
                    lease,
                    worker: None,
                },
                at(1, 0, 0),
            )
            .unwrap_err();
        assert!(matches!(error, QueueError::InvalidLease(_)), "{error}");
    }
}

fn an_expired_lease_returns_its_item_to_pending_at_the_next_claim(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let first = claim(&store, 1, lease_for(10), at(1, 2, 0));
    assert!(claim(&store, 1, lease_for(10), at(1, 2, 9)).is_empty());
    let stats = store
        .queue(QueueOptions::default())
        .stats(at(1, 2, 10))
        .unwrap();
    assert_eq!((stats.leased, stats.expired_leases), (1, 1));

    let second = claim(&store, 1, lease_for(10), at(1, 2, 10));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].lease_id, first[0].lease_id);
    assert_eq!((second[0].generation, second[0].attempt), (1, 2));
    let a = entry(&store, "a");
    assert_eq!(a.last_error.as_deref(), Some("lease expired"));
}

fn acking_an_expired_lease_is_refused_even_before_it_is_reclaimed(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let leases = claim(&store, 1, lease_for(10), at(1, 2, 0));
    let ids = lease_ids(&leases);
    assert_eq!(
        queue.ack(&ids, at(1, 2, 10)).unwrap(),
        vec![AckOutcome::Refused(LeaseRefusal::Expired {
            at: at(1, 2, 10)
        })]
    );
    assert_eq!(
        queue.fail(&ids, "late", None, at(1, 2, 11)).unwrap(),
        vec![FailOutcome::Refused(LeaseRefusal::Expired {
            at: at(1, 2, 10)
        })]
    );
    // Nothing was marked done: the item is delivered again.
    assert_eq!(claim(&store, 1, lease_for(10), at(1, 2, 12)).len(), 1);
}

fn acking_a_superseded_lease_is_refused_and_the_new_holder_keeps_the_item(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let old = claim(&store, 1, lease_for(10), at(1, 2, 0));
    let new = claim(&store, 1, lease_for(10), at(1, 2, 15));
    assert_eq!(new.len(), 1);
    assert_eq!(
        queue.ack(&lease_ids(&old), at(1, 2, 16)).unwrap(),
        vec![AckOutcome::Refused(LeaseRefusal::NotHeld)]
    );
    assert_eq!(entry(&store, "a").state, QueueState::Leased);
    assert_eq!(
        queue.ack(&lease_ids(&new), at(1, 2, 17)).unwrap(),
        vec![AckOutcome::Acked]
    );
}

fn each_id_of_a_mixed_ack_gets_its_own_answer(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(
            vec![rotation("a", at(1, 0, 0)), rotation("b", at(1, 0, 0))],
            at(1, 1, 0),
        )
        .unwrap();
    let leases = claim(&store, 2, lease_for(10), at(1, 2, 0));
    let ids = [
        leases[0].lease_id.as_str(),
        "not-a-lease",
        leases[1].lease_id.as_str(),
    ];
    assert_eq!(
        queue.ack(&ids, at(1, 2, 1)).unwrap(),
        vec![
            AckOutcome::Acked,
            AckOutcome::Refused(LeaseRefusal::NotHeld),
            AckOutcome::Acked
        ]
    );
    // A lease is released once: acking it again is refused.
    assert_eq!(
        queue.ack(&ids[..1], at(1, 2, 2)).unwrap(),
        vec![AckOutcome::Refused(LeaseRefusal::NotHeld)]
    );
}

// ---- attempts, dead, retry, purge ------------------------------------------------

fn failures_count_attempts_until_dead_and_retry_revives_with_attempts_reset(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions {
        max_attempts: 3,
        ..QueueOptions::default()
    });
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let mut outcomes = Vec::new();
    for minute in 0..3 {
        let leases = queue
            .claim(
                &ClaimRequest {
                    limit: 1,
                    lease: lease_for(5),
                    worker: Some("w1"),
                },
                at(1, 2, minute * 10),
            )
            .unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].attempt, minute + 1);
        outcomes.extend(
            queue
                .fail(
                    &lease_ids(&leases),
                    &format!("failure {minute}"),
                    None,
                    at(1, 2, minute * 10 + 1),
                )
                .unwrap(),
        );
    }
    assert_eq!(
        outcomes,
        vec![
            FailOutcome::Retrying,
            FailOutcome::Retrying,
            FailOutcome::Dead
        ]
    );
    let a = entry(&store, "a");
    assert_eq!((a.state, a.attempts), (QueueState::Dead, 3));
    assert_eq!(a.last_error.as_deref(), Some("failure 2"));
    assert!(claim(&store, 1, lease_for(5), at(1, 3, 0)).is_empty());
    assert_eq!(queue.stats(at(1, 3, 0)).unwrap().dead, 1);

    assert_eq!(queue.retry_dead(at(1, 4, 0)).unwrap(), 1);
    let a = entry(&store, "a");
    assert_eq!(
        (a.state, a.attempts, a.due_at),
        (QueueState::Pending, 0, at(1, 4, 0))
    );
    let leases = claim(&store, 1, lease_for(5), at(1, 4, 1));
    assert_eq!(leases[0].attempt, 1);
}

fn an_expired_lease_counts_as_a_failed_attempt(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions {
        max_attempts: 2,
        ..QueueOptions::default()
    });
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let claim_at = |minute| {
        queue
            .claim(
                &ClaimRequest {
                    limit: 1,
                    lease: lease_for(5),
                    worker: Some("slow"),
                },
                at(1, 2, minute),
            )
            .unwrap()
    };
    assert_eq!(claim_at(0).len(), 1);
    assert_eq!(claim_at(10).len(), 1);
    assert_eq!(
        queue.reclaim_expired(at(1, 2, 20)).unwrap(),
        Reclaimed {
            pending: 0,
            dead: 1
        }
    );
    let a = entry(&store, "a");
    assert_eq!(a.state, QueueState::Dead);
    assert_eq!(
        a.last_error.as_deref(),
        Some("lease expired (held by slow)")
    );
}

fn reclaiming_leaves_live_leases_alone(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(
            vec![rotation("a", at(1, 0, 0)), rotation("b", at(1, 0, 0))],
            at(1, 1, 0),
        )
        .unwrap();
    let short = claim(&store, 1, lease_for(5), at(1, 2, 0));
    let long = claim(&store, 1, lease_for(60), at(1, 2, 0));
    assert_eq!(
        queue.reclaim_expired(at(1, 2, 30)).unwrap(),
        Reclaimed {
            pending: 1,
            dead: 0
        }
    );
    ack_all(&store, &long, at(1, 2, 31));
    assert_eq!(
        queue.ack(&lease_ids(&short), at(1, 2, 31)).unwrap(),
        vec![AckOutcome::Refused(LeaseRefusal::NotHeld)]
    );
}

fn purge_deletes_only_done_items_finished_before_the_cutoff(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(
            (0..4)
                .map(|i| rotation(&format!("b{i}"), at(1, 0, 0)))
                .collect(),
            at(1, 1, 0),
        )
        .unwrap();
    let early = claim(&store, 1, lease_for(60), at(1, 2, 0));
    ack_all(&store, &early, at(1, 2, 1));
    let late = claim(&store, 1, lease_for(60), at(5, 0, 0));
    ack_all(&store, &late, at(5, 0, 1));
    let _still_leased = claim(&store, 1, lease_for(60), at(5, 0, 2));
    assert_eq!(queue.purge_done(at(3, 0, 0)).unwrap(), 1);
    let stats = queue.stats(at(5, 0, 1)).unwrap();
    assert_eq!(
        (stats.pending, stats.leased, stats.done, stats.dead),
        (1, 1, 1, 0)
    );
}

fn stats_count_each_state_and_the_oldest_pending(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions {
        max_attempts: 1,
        ..QueueOptions::default()
    });
    store
        .ingest(
            (0..5)
                .map(|i| rotation(&format!("b{i}"), at(1, 0, 0)))
                .collect(),
            at(1, 1, 0),
        )
        .unwrap();
    store
        .ingest(vec![rotation("later", at(1, 0, 0))], at(1, 3, 0))
        .unwrap();
    let leases = claim(&store, 3, lease_for(60), at(1, 4, 0));
    ack_all(&store, &leases[..1], at(1, 4, 1));
    queue
        .fail(&lease_ids(&leases[1..2]), "no", None, at(1, 4, 2))
        .unwrap();
    let stats = queue.stats(at(1, 4, 3)).unwrap();
    assert_eq!(
        (stats.pending, stats.leased, stats.done, stats.dead),
        (3, 1, 1, 1)
    );
    assert_eq!(stats.expired_leases, 0);
    assert_eq!(stats.oldest_pending_due_at, Some(at(1, 1, 0)));
}

// ---- retry backoff -----------------------------------------------------------------

fn backoff_options(first_secs: u64, cap_secs: u64) -> QueueOptions {
    QueueOptions {
        max_attempts: 10,
        retry_backoff: Duration::from_secs(first_secs),
        max_retry_backoff: Duration::from_secs(cap_secs),
    }
}

fn claim_with(queue: &impl RemapQueue, now: chrono::DateTime<chrono::Utc>) -> Vec<Lease> {
    queue
        .claim(
            &ClaimRequest {
                limit: 10,
                lease: lease_for(5),
                worker: None,
            },
            now,
        )
        .unwrap()
}

fn a_failed_item_waits_its_backoff_doubling_per_attempt_up_to_the_cap(db: TempDb) {
    let store = db.open();
    let queue = store.queue(backoff_options(30, 100));
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let second = |s: i64| at(1, 2, 0) + chrono::Duration::seconds(s);
    let mut now = second(0);
    // The waits after attempts 1, 2, 3, 4: 30 s, 60 s, then capped at 100 s.
    for (attempt, wait) in [(1, 30), (2, 60), (3, 100), (4, 100)] {
        let leases = claim_with(&queue, now);
        assert_eq!(leases.len(), 1, "attempt {attempt}");
        assert_eq!(leases[0].attempt, attempt);
        let failed_at = now + chrono::Duration::seconds(1);
        assert_eq!(
            queue
                .fail(&lease_ids(&leases), "503", None, failed_at)
                .unwrap(),
            [FailOutcome::Retrying]
        );
        let due = failed_at + chrono::Duration::seconds(wait);
        let a = entry(&store, "a");
        assert_eq!((a.state, a.due_at), (QueueState::Pending, due));
        assert!(
            claim_with(&queue, due - chrono::Duration::milliseconds(1)).is_empty(),
            "claimed before its retry time after attempt {attempt}"
        );
        now = due;
    }
    assert_eq!(claim_with(&queue, now)[0].attempt, 5);
}

fn retry_after_overrides_the_backoff_for_the_ids_it_fails(db: TempDb) {
    let store = db.open();
    let queue = store.queue(backoff_options(30, 3600));
    store
        .ingest(
            vec![rotation("a", at(1, 0, 0)), rotation("b", at(1, 0, 0))],
            at(1, 1, 0),
        )
        .unwrap();
    let leases = claim_with(&queue, at(1, 2, 0));
    let (a, b) = (&leases[..1], &leases[1..]);
    queue
        .fail(&lease_ids(a), "later", Some(lease_for(90)), at(1, 2, 1))
        .unwrap();
    queue
        .fail(&lease_ids(b), "now", Some(Duration::ZERO), at(1, 2, 1))
        .unwrap();
    assert_eq!(entry(&store, "a").due_at, at(1, 3, 31));
    let again = claim_with(&queue, at(1, 2, 1));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].subject.bucket_id(), Some("b"));
    let ten_years_and_more = lease_for(11 * 366 * 24 * 60);
    let error = queue
        .fail(
            &lease_ids(&again),
            "x",
            Some(ten_years_and_more),
            at(1, 2, 2),
        )
        .unwrap_err();
    assert!(matches!(error, QueueError::InvalidRetryDelay(_)), "{error}");
    ack_all(&store, &again, at(1, 2, 2));
    assert!(claim_with(&queue, at(1, 3, 30)).is_empty());
    assert_eq!(claim_with(&queue, at(1, 3, 31)).len(), 1);
}

fn an_expired_lease_is_claimable_at_once_whatever_the_backoff(db: TempDb) {
    let store = db.open();
    let queue = store.queue(backoff_options(3600, 3600));
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    assert_eq!(claim_with(&queue, at(1, 2, 0)).len(), 1);
    let again = claim_with(&queue, at(1, 2, 5));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

fn a_rotation_that_arrived_while_leased_is_due_from_its_arrival_after_a_fail(db: TempDb) {
    let store = db.open();
    let queue = store.queue(backoff_options(3600, 3600));
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let first = claim_with(&queue, at(1, 2, 0));
    store
        .ingest(vec![rotation("a", at(1, 12, 0))], at(1, 2, 1))
        .unwrap();
    assert_eq!(
        queue
            .fail(&lease_ids(&first), "503", None, at(1, 2, 2))
            .unwrap(),
        [FailOutcome::NewerPending]
    );
    assert_eq!(entry(&store, "a").due_at, at(1, 2, 1));
    let second = claim_with(&queue, at(1, 2, 2));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].version, at(1, 12, 0));
}

fn stats_count_the_items_waiting_for_their_retry_apart_from_the_oldest_due(db: TempDb) {
    let store = db.open();
    let queue = store.queue(backoff_options(3600, 3600));
    store
        .ingest(vec![rotation("early", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    store
        .ingest(vec![rotation("late", at(1, 0, 0))], at(1, 3, 0))
        .unwrap();
    let early = claim(&store, 1, lease_for(5), at(1, 4, 0));
    queue
        .fail(&lease_ids(&early), "503", None, at(1, 4, 1))
        .unwrap();
    let stats = queue.stats(at(1, 4, 2)).unwrap();
    assert_eq!((stats.pending, stats.retry_waiting), (2, 1));
    // The failed item became due first, but waits: the oldest due is `late`.
    assert_eq!(stats.oldest_pending_due_at, Some(at(1, 3, 0)));
    let stats = queue.stats(at(1, 5, 1)).unwrap();
    assert_eq!((stats.pending, stats.retry_waiting), (2, 0));
    assert_eq!(stats.oldest_pending_due_at, Some(at(1, 3, 0)));
}

// ---- bounds ------------------------------------------------------------------------

fn a_claim_refuses_a_limit_above_the_bound_and_a_bad_worker_name(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let request = |limit, worker| ClaimRequest {
        limit,
        lease: lease_for(5),
        worker,
    };
    let error = queue
        .claim(&request(MAX_CLAIM_LIMIT + 1, None), at(1, 2, 0))
        .unwrap_err();
    assert!(matches!(error, QueueError::InvalidClaimLimit(_)), "{error}");
    let long = "w".repeat(MAX_WORKER_BYTES + 1);
    for worker in [long.as_str(), "tab\there", "esc\x1b[0m"] {
        let error = queue
            .claim(&request(1, Some(worker)), at(1, 2, 0))
            .unwrap_err();
        assert!(matches!(error, QueueError::InvalidWorker(_)), "{error}");
    }
    assert_eq!(
        queue
            .claim(&request(MAX_CLAIM_LIMIT, Some("ok")), at(1, 2, 0))
            .unwrap()
            .len(),
        1
    );
}

fn a_long_error_is_stored_cut_to_the_bound_with_a_marker(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let leases = claim(&store, 1, lease_for(5), at(1, 2, 0));
    let error = "traceback line\n".repeat(1000);
    queue
        .fail(&lease_ids(&leases), &error, None, at(1, 2, 1))
        .unwrap();
    let stored = entry(&store, "a").last_error.unwrap();
    assert!(stored.len() <= MAX_ERROR_BYTES, "{}", stored.len());
    assert!(stored.starts_with("traceback line\ntraceback line\n"));
    assert!(stored.ends_with("… [cut, 15000 bytes in all]"), "{stored}");
}

// ---- listing -------------------------------------------------------------------------

fn entries_stream_state_by_state_each_in_its_order_and_stop_when_the_visitor_breaks(db: TempDb) {
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    store
        .ingest(
            (0..6)
                .map(|i| rotation(&format!("b{i}"), at(1, 0, 0)))
                .collect(),
            at(1, 1, 0),
        )
        .unwrap();
    let leased = claim(&store, 3, lease_for(60), at(1, 2, 0));
    ack_all(&store, &leased[..1], at(1, 2, 1));
    let states: Vec<QueueState> = queue
        .list(&ListFilter::default())
        .unwrap()
        .iter()
        .map(|e| e.state)
        .collect();
    use QueueState::{Done, Leased, Pending};
    assert_eq!(states, [Pending, Pending, Pending, Leased, Leased, Done]);
    let limited = queue
        .list(&ListFilter {
            state: None,
            limit: Some(4),
        })
        .unwrap();
    assert_eq!(limited.last().unwrap().state, Leased);
    assert_eq!(limited.len(), 4);

    let mut seen = Vec::new();
    let flow = queue
        .for_each_entry(&ListFilter::default(), |entry| {
            seen.push(entry.subject.key.clone());
            if seen.len() == 2 {
                ControlFlow::Break("enough")
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(flow, ControlFlow::Break("enough"));
    assert_eq!(seen, ["b3", "b4"]);
}

crate::on_both_backends!(
    a_rotation_while_pending_coalesces_into_one_entry_with_the_newer_version,
    a_rotation_while_leased_is_pending_again_after_the_ack_with_the_newer_version,
    a_rotation_while_leased_is_pending_again_when_the_lease_expires,
    a_rotation_while_leased_survives_a_failed_lease,
    a_rotation_after_done_is_a_new_generation_with_attempts_reset,
    a_rotation_of_a_dead_entry_makes_it_pending_as_a_new_generation,
    claims_take_the_longest_waiting_first_each_item_with_its_own_lease,
    a_claim_never_hands_out_an_item_that_is_leased,
    a_claim_of_nothing_pending_is_empty,
    a_lease_must_last_a_sensible_time,
    an_expired_lease_returns_its_item_to_pending_at_the_next_claim,
    acking_an_expired_lease_is_refused_even_before_it_is_reclaimed,
    acking_a_superseded_lease_is_refused_and_the_new_holder_keeps_the_item,
    each_id_of_a_mixed_ack_gets_its_own_answer,
    failures_count_attempts_until_dead_and_retry_revives_with_attempts_reset,
    an_expired_lease_counts_as_a_failed_attempt,
    reclaiming_leaves_live_leases_alone,
    purge_deletes_only_done_items_finished_before_the_cutoff,
    stats_count_each_state_and_the_oldest_pending,
    a_failed_item_waits_its_backoff_doubling_per_attempt_up_to_the_cap,
    retry_after_overrides_the_backoff_for_the_ids_it_fails,
    an_expired_lease_is_claimable_at_once_whatever_the_backoff,
    a_rotation_that_arrived_while_leased_is_due_from_its_arrival_after_a_fail,
    stats_count_the_items_waiting_for_their_retry_apart_from_the_oldest_due,
    a_claim_refuses_a_limit_above_the_bound_and_a_bad_worker_name,
    a_long_error_is_stored_cut_to_the_bound_with_a_marker,
    entries_stream_state_by_state_each_in_its_order_and_stop_when_the_visitor_breaks,
);
