//! Normalize + hash of 1,000,000 emails, the per-identity cost of an
//! identity-map run or `identities import`, on one core.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uid2_bucket_sync::identity::{IdentityHash, normalize_email};

const EMAILS: usize = 1_000_000;

/// A CRM-export-like mix: mostly plain addresses, a third at gmail.com with
/// dots and `+tags`, some in mixed case, some with stray spaces.
fn emails() -> Vec<String> {
    const FIRST: &[&str] = &[
        "jane", "John", "maria", "LI", "oskar", "Amara", "wei", "noor",
    ];
    const LAST: &[&str] = &[
        "saoirse", "Smith", "garcia", "WANG", "berg", "okafor", "chen",
    ];
    const DOMAINS: &[&str] = &[
        "gmail.com",
        "GMail.com",
        "example.com",
        "outlook.com",
        "yahoo.co.uk",
        "Company-Mail.de",
    ];
    let mut rng = StdRng::seed_from_u64(20_260_808);
    (0..EMAILS)
        .map(|i| {
            let first = FIRST[rng.random_range(0..FIRST.len())];
            let last = LAST[rng.random_range(0..LAST.len())];
            let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
            let sep = [".", "", "_", "."][rng.random_range(0..4)];
            let tag = if rng.random_bool(0.15) { "+news" } else { "" };
            let lead = if rng.random_bool(0.05) { "  " } else { "" };
            let trail = if rng.random_bool(0.05) { " " } else { "" };
            format!("{lead}{first}{sep}{last}{}{tag}@{domain}{trail}", i % 1000)
        })
        .collect()
}

fn normalize(c: &mut Criterion) {
    let emails = emails();
    let bytes: usize = emails.iter().map(String::len).sum();
    eprintln!(
        "{EMAILS} emails, {:.1} bytes on average",
        bytes as f64 / EMAILS as f64
    );

    let mut group = c.benchmark_group("normalize");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EMAILS as u64));
    group.bench_function("normalize_and_hash_1M_emails", |b| {
        b.iter(|| {
            let mut fold = 0u8;
            for email in &emails {
                let hash = IdentityHash::of_email(email).expect("the fixture is valid");
                fold ^= hash.as_bytes()[0];
            }
            black_box(fold)
        });
    });
    // What a request body needs: the hash as base64 text.
    group.bench_function("normalize_hash_and_base64_1M_emails", |b| {
        b.iter(|| {
            let mut fold = 0u8;
            for email in &emails {
                let hash = IdentityHash::of_email(email).expect("the fixture is valid");
                fold ^= hash.to_base64().as_str().as_bytes()[0];
            }
            black_box(fold)
        });
    });
    // Normalization alone, into one reused buffer, to see what hashing costs.
    group.bench_function("normalize_only_1M_emails", |b| {
        let mut out = String::new();
        b.iter(|| {
            let mut total = 0usize;
            for email in &emails {
                normalize_email(email, &mut out).expect("the fixture is valid");
                total += out.len();
            }
            black_box(total)
        });
    });
    group.finish();
}

criterion_group!(benches, normalize);
criterion_main!(benches);
