//! Decode + decrypt + parse of a first-sync answer (2^20 rows, ~91 MiB of
//! base64): the exact path the client runs once the body is in memory.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::open_response;
use uid2_bucket_sync::operator::body::decode_base64_in_place;
use uid2_bucket_sync::operator::{BodyEncoding, open_buckets_body, parse_buckets_json};

#[path = "support/large_response.rs"]
mod large_response;

fn open_first_sync(c: &mut Criterion) {
    let response = large_response::build(large_response::ROWS);
    eprintln!(
        "body: {} bytes base64, {} bytes JSON, {} rows",
        response.body.len(),
        response.json_bytes,
        large_response::ROWS
    );

    let secret = ClientSecret::from_bytes(response.secret_key);
    let mut group = c.benchmark_group("open_response");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(response.body.len() as u64));
    group.bench_function("base64_2^20_rows", |b| {
        b.iter_batched(
            || response.body.clone(),
            |body| {
                let opened =
                    open_buckets_body(&secret, body, BodyEncoding::Base64, &response.nonce)
                        .expect("the fixture opens");
                assert_eq!(opened.rotations.len(), large_response::ROWS);
                opened
            },
            BatchSize::PerIteration,
        );
    });

    // The same path split into its three steps, to see which one dominates.
    let envelope = decode_base64_in_place(response.body.clone()).expect("the fixture decodes");
    let payload = open_response(&secret, envelope.clone(), &response.nonce)
        .expect("the fixture opens")
        .payload()
        .to_owned();
    group.bench_function("step_1_base64_decode_in_place", |b| {
        b.iter_batched(
            || response.body.clone(),
            |body| decode_base64_in_place(body).expect("the fixture decodes"),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("step_2_decrypt_in_place", |b| {
        b.iter_batched(
            || envelope.clone(),
            |envelope| {
                open_response(&secret, envelope, &response.nonce).expect("the fixture opens")
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("step_3_parse_rows", |b| {
        b.iter(|| parse_buckets_json(&payload).expect("the fixture parses"));
    });
    group.finish();
}

criterion_group!(benches, open_first_sync);
criterion_main!(benches);
