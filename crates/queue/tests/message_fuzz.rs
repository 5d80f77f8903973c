//! The message path under random and mutated input (issue 8): whatever bytes and
//! headers a publisher sends, decoding never panics and allocates in proportion to the
//! message (never to a number inside it), the attempt count stays the broker's, and every
//! refusal has a reason that fits in the bounded headers of its dead-letter copy.
//! Deterministic per proptest seed; runs on the stable toolchain in CI.

use std::alloc::System;

use asset_core::ErrorCode;
use asset_queue::settle::{self, CopyHeaders, MAX_HEADER_TABLE_BYTES, MAX_REASON_BYTES, Progress};
use asset_queue::{ImportJob, JobLimits, Outcome, header_str, headers};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use proptest::prelude::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A job that passes every check (asserted once below), for the mutations to break.
fn valid_job(assets: usize) -> Vec<u8> {
    let assets: Vec<serde_json::Value> = (0..assets)
        .map(|i| serde_json::json!({"asset_id": format!("a-{i}"), "external_id": "e", "url": "s3://bucket-1/k.png"}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schema": "import-job/v1", "job_id": "job-1", "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-01-01T00:00:00Z",
        "storage": {"provider": "s3_compatible", "id": "i-1", "org_id": "org-1", "endpoint": "https://s3.example.com",
                    "buckets": ["bucket-1"], "access": {"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S"}},
        "assets": assets
    }))
    .unwrap()
}

/// Mutations that found most parser bugs, applied to a message: flips, cuts,
/// insertions, a string blown up, a range duplicated.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Inflate(usize, usize),
    Duplicate(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 0usize..200_000).prop_map(|(a, n)| Mutation::Inflate(a, n)),
        (any::<usize>(), any::<usize>(), 1usize..50).prop_map(|(a, b, n)| Mutation::Duplicate(a, b, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match *m {
        Mutation::Flip(at, b) => {
            if !bytes.is_empty() {
                bytes[at % len] ^= b;
            }
        }
        Mutation::Cut(at) => bytes.truncate(at % len),
        Mutation::Insert(at, ref b) => {
            let at = at % len;
            bytes.splice(at.min(bytes.len())..at.min(bytes.len()), b.iter().copied());
        }
        // Inside the first string after `at`, n more characters.
        Mutation::Inflate(at, n) => {
            if let Some(q) = bytes.iter().skip(at % len).position(|&c| c == b'"') {
                let at = at % len + q + 1;
                bytes.splice(at..at, std::iter::repeat_n(b'x', n));
            }
        }
        Mutation::Duplicate(a, b, n) => {
            let (s, e) = ((a % len).min(b % len), (a % len).max(b % len));
            let piece = bytes[s..e.min(bytes.len())].to_vec();
            for _ in 0..n {
                bytes.splice(e.min(bytes.len())..e.min(bytes.len()), piece.iter().copied());
            }
        }
    }
    bytes
}

fn any_value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        (0usize..20_000).prop_map(|n| AMQPValue::LongString(LongString::from(vec![b'v'; n]))),
        "[a-z-]{0,20}".prop_map(|s| AMQPValue::LongString(LongString::from(s.into_bytes()))),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8)
                .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            proptest::collection::vec(("[a-z-]{1,12}", inner), 0..8).prop_map(|kv| {
                let mut t = FieldTable::default();
                for (k, v) in kv {
                    t.insert(k.into(), v);
                }
                AMQPValue::FieldTable(t)
            }),
        ]
    })
}

fn any_headers() -> impl Strategy<Value = FieldTable> {
    let key = prop_oneof![
        Just("x-attempt".to_string()),
        Just("x-death".to_string()),
        Just("x-progress".to_string()),
        Just("x-reason".to_string()),
        Just("x-original-exchange".to_string()),
        Just("x-first-death-queue".to_string()),
        "[a-z-]{1,20}",
    ];
    proptest::collection::vec((key, any_value()), 0..12).prop_map(|kv| {
        let mut t = FieldTable::default();
        for (k, v) in kv {
            t.insert(k.into(), v);
        }
        t
    })
}

/// What one message costs and gives, as the consumer would see it.
fn check_message(body: &[u8], headers: &FieldTable) -> Result<(), TestCaseError> {
    let limits = JobLimits { max_bytes: 1 << 20, max_assets: 10_000 };
    // The schema validator is compiled once per process, on first use: not per message.
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| drop(ImportJob::decode(&valid_job(1), &limits)));
    let region = Region::new(GLOBAL);
    let decoded = ImportJob::decode(body, &limits);
    let allocated = region.change().bytes_allocated;
    // A JSON value tree costs a small multiple of its text; nothing a message says can
    // make it allocate more (a body over the limit is refused before parsing). The
    // constant is the regex engine's lazy DFA caches, which grow once to their cap the
    // first time a pattern meets a new shape of input.
    prop_assert!(
        allocated <= 64 * body.len().min(limits.max_bytes) + (8 << 20),
        "decoding {} bytes allocated {allocated}",
        body.len()
    );
    if let Some(id) = &decoded.job_id {
        prop_assert!(id.len() <= 256);
    }

    let trusted = settle::trusted(Some(headers), "q.retry");
    prop_assert!(trusted.attempt >= 1);
    let forged_only = !headers.inner().contains_key("x-death");
    if forged_only {
        prop_assert_eq!(trusted.attempt, 1, "without the broker's x-death nothing raises the attempt");
        prop_assert!(trusted.progress.is_empty());
    }

    let outcome = match &decoded.job {
        Ok(_) => Outcome::retry("a transient fault", ErrorCode::Upstream),
        Err(e) => Outcome::for_job_error(e),
    };
    let (reason, code) = match &outcome {
        Outcome::Reject { reason, code } | Outcome::Retry { reason, code, .. } => (reason.clone(), *code),
        other => return Err(TestCaseError::fail(format!("{other:?}"))),
    };
    prop_assert!(!reason.is_empty());
    let progress = Progress { ok: 3, ..Default::default() };
    let table = settle::copy_headers(
        Some(headers),
        &CopyHeaders {
            reason: &reason,
            code,
            attempt: trusted.attempt,
            job_id: decoded.job_id.as_deref(),
            progress: Some(&progress),
            exchange: "asset-import",
            routing_key: "job.v1",
            retry_queue: "q.retry",
        },
    );
    prop_assert!(settle::table_size(&table) <= MAX_HEADER_TABLE_BYTES, "{}", settle::table_size(&table));
    let written = header_str(Some(&table), headers::REASON).unwrap_or_default();
    prop_assert!(!written.is_empty() && written.len() <= MAX_REASON_BYTES);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_jobs_and_random_headers(assets in 1usize..40, muts in proptest::collection::vec(mutation(), 0..6), headers in any_headers()) {
        let body = muts.iter().fold(valid_job(assets), apply);
        check_message(&body, &headers)?;
    }

    #[test]
    fn random_bytes(body in proptest::collection::vec(any::<u8>(), 0..4096), headers in any_headers()) {
        check_message(&body, &headers)?;
    }
}

#[test]
fn the_seed_job_is_valid() {
    ImportJob::decode(&valid_job(3), &JobLimits::default()).job.unwrap();
}

#[test]
fn a_message_over_the_limit_is_not_parsed_at_all() {
    let body = vec![b'['; 8 << 20];
    let region = Region::new(GLOBAL);
    let decoded = ImportJob::decode(&body, &JobLimits::default());
    assert!(region.change().bytes_allocated < 4096, "refused from its size alone");
    assert!(decoded.job.is_err());
}

#[test]
fn deep_nesting_is_refused_by_the_json_parser_not_the_stack() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let decoded = ImportJob::decode(body.as_bytes(), &JobLimits { max_bytes: 1 << 20, max_assets: 10 });
    assert!(decoded.job.is_err());
}
