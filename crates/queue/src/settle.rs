//! The pure half of settling a job: which attempt a delivery is (from state the broker
//! keeps, never from a header a publisher can set), what earlier attempts already
//! finished, and the headers of a retry or dead-letter copy, each bounded so that no
//! message, however hostile, can make a copy the broker refuses (frame_max) and close
//! the connection under every job in flight.

use std::collections::BTreeMap;

use asset_core::ErrorCode;
use asset_schemas::cut;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use crate::topology::{header_str, header_u32, headers};

/// Most bytes of `x-reason` we write (the rest is cut with a marker).
pub const MAX_REASON_BYTES: usize = 1024;
/// Most bytes of any other string header we write.
pub const MAX_HEADER_VALUE_BYTES: usize = 256;
/// Most bytes of the publisher's own headers carried over to a copy; beyond it they are
/// dropped (and counted in `x-headers-dropped`).
pub const MAX_CARRIED_HEADER_BYTES: usize = 8 * 1024;
/// Upper bound of the encoded header table of any copy we publish: well under the
/// smallest frame_max a broker may negotiate (4096 is the protocol's minimum; RabbitMQ's
/// default is 128 KiB).
pub const MAX_HEADER_TABLE_BYTES: usize = 16 * 1024;

/// What earlier attempts of a job finished, carried by its retry copy so the job's
/// completion counts every asset although the retry carries only the unfinished ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub ok: u32,
    pub failed: u32,
    /// Error code → assets that failed with it.
    pub error_codes: BTreeMap<String, u32>,
}

impl Progress {
    pub fn is_empty(&self) -> bool {
        self.ok == 0 && self.failed == 0
    }

    /// Adds another attempt's tally.
    pub fn merge(&mut self, other: &Progress) {
        self.ok = self.ok.saturating_add(other.ok);
        self.failed = self.failed.saturating_add(other.failed);
        for (code, n) in &other.error_codes {
            let slot = self.error_codes.entry(code.clone()).or_default();
            *slot = slot.saturating_add(*n);
        }
    }

    /// `ok=3;failed=1;not_found=1,timeout=0`: short, and only stable codes as keys.
    pub fn to_header(&self) -> String {
        let codes: Vec<String> = self.error_codes.iter().map(|(c, n)| format!("{c}={n}")).collect();
        format!("ok={};failed={};{}", self.ok, self.failed, codes.join(","))
    }

    /// Parses [`Progress::to_header`]; anything else (or a code we do not know) is `None`.
    pub fn from_header(s: &str) -> Option<Progress> {
        if s.len() > MAX_HEADER_VALUE_BYTES * 4 {
            return None;
        }
        let mut parts = s.splitn(3, ';');
        let ok = parts.next()?.strip_prefix("ok=")?.parse().ok()?;
        let failed = parts.next()?.strip_prefix("failed=")?.parse().ok()?;
        let mut error_codes = BTreeMap::new();
        for pair in parts.next()?.split(',').filter(|p| !p.is_empty()) {
            let (code, n) = pair.split_once('=')?;
            if !ErrorCode::ALL.iter().any(|c| c.as_str() == code) {
                return None;
            }
            error_codes.insert(code.to_string(), n.parse().ok()?);
        }
        Some(Progress { ok, failed, error_codes })
    }
}

/// Where a delivery stands, read from what the broker wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    /// 1 on a first delivery, +1 for every pass through our retry queue.
    pub attempt: u32,
    /// Earlier attempts' tally, when the message came back from our retry queue.
    pub progress: Progress,
}

/// The attempt number and earlier progress of a delivery. Only a message that passed
/// through `retry_queue` has either: the broker records each pass in `x-death`
/// (`{queue: retry_queue, reason: expired, count}`) when it dead-letters the expired
/// copy back to the jobs queue. A publisher's own `x-attempt` or `x-progress` on a fresh
/// message is ignored, so it can neither disable retries nor fake a tally.
pub fn trusted(table: Option<&FieldTable>, retry_queue: &str) -> Trusted {
    let Some(passes) = retry_passes(table, retry_queue) else {
        return Trusted { attempt: 1, progress: Progress::default() };
    };
    // Brokers that do not accumulate `count` on a copy we republished (RabbitMQ
    // 3.13.0–3.13.2) still see our own attempt header grow, so the larger one wins.
    let ours = header_u32(table, headers::ATTEMPT).unwrap_or(0);
    let attempt = passes.saturating_add(1).max(ours).max(2);
    let progress =
        header_str(table, headers::PROGRESS).and_then(|s| Progress::from_header(&s)).unwrap_or_default();
    Trusted { attempt, progress }
}

/// The `count` of the `x-death` entry our retry queue's expiry wrote, if any.
fn retry_passes(table: Option<&FieldTable>, retry_queue: &str) -> Option<u32> {
    let AMQPValue::FieldArray(deaths) = table?.inner().get(&ShortString::from(headers::DEATH))? else {
        return None;
    };
    deaths.as_slice().iter().find_map(|entry| {
        let AMQPValue::FieldTable(entry) = entry else { return None };
        let queue = header_str(Some(entry), "queue")?;
        let reason = header_str(Some(entry), "reason")?;
        if queue != retry_queue || reason != "expired" {
            return None;
        }
        Some(header_u32(Some(entry), "count").unwrap_or(1))
    })
}

/// What a retry or dead-letter copy says about itself.
#[derive(Debug, Clone)]
pub struct CopyHeaders<'a> {
    pub reason: &'a str,
    pub code: ErrorCode,
    pub attempt: u32,
    pub job_id: Option<&'a str>,
    pub progress: Option<&'a Progress>,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub retry_queue: &'a str,
}

/// The header table of a copy: ours, bounded, plus as many of the publisher's headers
/// as fit in [`MAX_CARRIED_HEADER_BYTES`], plus the one `x-death` entry of our retry
/// queue (the broker increments its count on the next pass). Everything else the
/// broker or a publisher put in `x-death` and the `x-first-death-*`/`x-last-death-*`
/// headers is dropped. The result always encodes in at most [`MAX_HEADER_TABLE_BYTES`].
pub fn copy_headers(old: Option<&FieldTable>, h: &CopyHeaders<'_>) -> FieldTable {
    let ours = [
        headers::ATTEMPT,
        headers::REASON,
        headers::ERROR_CODE,
        headers::JOB_ID,
        headers::PROGRESS,
        headers::DEATH,
        headers::HEADERS_DROPPED,
    ];
    let mut table = FieldTable::default();
    let mut carried = 0usize;
    let mut dropped = 0u32;
    let mut original = None;
    if let Some(old) = old {
        for (k, v) in old.inner() {
            let key = k.as_str();
            if key == headers::ORIGINAL_EXCHANGE || key == headers::ORIGINAL_ROUTING_KEY {
                // Ours from an earlier copy, or forged: kept only as a pair, bounded.
                original = Some(());
                continue;
            }
            if ours.contains(&key) || key.starts_with("x-first-death") || key.starts_with("x-last-death") {
                continue;
            }
            let size = key.len() + 1 + value_size(v);
            if carried + size > MAX_CARRIED_HEADER_BYTES {
                dropped += 1;
                continue;
            }
            carried += size;
            table.insert(k.clone(), v.clone());
        }
        if let Some(entry) = retry_death_entry(old, h.retry_queue) {
            table.insert(headers::DEATH.into(), AMQPValue::FieldArray(FieldArray::from(vec![entry])));
        }
    }
    let (exchange, routing_key) = match (original, old) {
        (Some(()), Some(old)) => (
            header_str(Some(old), headers::ORIGINAL_EXCHANGE).unwrap_or_else(|| h.exchange.to_string()),
            header_str(Some(old), headers::ORIGINAL_ROUTING_KEY).unwrap_or_else(|| h.routing_key.to_string()),
        ),
        _ => (h.exchange.to_string(), h.routing_key.to_string()),
    };
    table.insert(headers::ORIGINAL_EXCHANGE.into(), string(&cut(&exchange, MAX_HEADER_VALUE_BYTES)));
    table.insert(headers::ORIGINAL_ROUTING_KEY.into(), string(&cut(&routing_key, MAX_HEADER_VALUE_BYTES)));
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(h.attempt));
    table.insert(headers::REASON.into(), string(&cut(h.reason, MAX_REASON_BYTES)));
    table.insert(headers::ERROR_CODE.into(), string(h.code.as_str()));
    if let Some(job_id) = h.job_id {
        table.insert(headers::JOB_ID.into(), string(&cut(job_id, MAX_HEADER_VALUE_BYTES)));
    }
    if let Some(p) = h.progress.filter(|p| !p.is_empty()) {
        table.insert(headers::PROGRESS.into(), string(&cut(&p.to_header(), MAX_HEADER_VALUE_BYTES * 4)));
    }
    if dropped > 0 {
        table.insert(headers::HEADERS_DROPPED.into(), AMQPValue::LongUInt(dropped));
    }
    table
}

/// Our retry queue's `x-death` entry, if it is small enough to carry (a forged one may
/// not be).
fn retry_death_entry(old: &FieldTable, retry_queue: &str) -> Option<AMQPValue> {
    let AMQPValue::FieldArray(deaths) = old.inner().get(&ShortString::from(headers::DEATH))? else {
        return None;
    };
    deaths
        .as_slice()
        .iter()
        .find(|entry| {
            let AMQPValue::FieldTable(t) = entry else { return false };
            header_str(Some(t), "queue").as_deref() == Some(retry_queue)
                && header_str(Some(t), "reason").as_deref() == Some("expired")
        })
        .filter(|entry| value_size(entry) <= 2048)
        .cloned()
}

/// An upper bound of the bytes `v` takes in an AMQP 0-9-1 field table.
pub fn value_size(v: &AMQPValue) -> usize {
    1 + match v {
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::FieldTable(t) => table_size(t),
        AMQPValue::FieldArray(a) => 4 + a.as_slice().iter().map(value_size).sum::<usize>(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        _ => 9,
    }
}

/// An upper bound of the bytes a whole field table takes.
pub fn table_size(t: &FieldTable) -> usize {
    4 + t.inner().iter().map(|(k, v)| 1 + k.as_str().len() + value_size(v)).sum::<usize>()
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &str, count: i64) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), string(queue));
        t.insert("reason".into(), string(reason));
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        AMQPValue::FieldTable(t)
    }

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(k.into(), v);
        }
        t
    }

    #[test]
    fn a_publishers_attempt_header_is_ignored() {
        let forged = table(vec![
            (headers::ATTEMPT, AMQPValue::LongUInt(99)),
            (headers::PROGRESS, string("ok=5000;failed=0;")),
        ]);
        assert_eq!(trusted(Some(&forged), "r"), Trusted { attempt: 1, progress: Progress::default() });
        assert_eq!(trusted(None, "r").attempt, 1);
    }

    #[test]
    fn attempts_count_the_retry_queues_expiries() {
        let deaths = FieldArray::from(vec![death("jobs", "rejected", 4), death("r", "expired", 2)]);
        let t = table(vec![
            (headers::DEATH, AMQPValue::FieldArray(deaths)),
            (headers::PROGRESS, string("ok=3;failed=1;not_found=1")),
        ]);
        let got = trusted(Some(&t), "r");
        assert_eq!(got.attempt, 3);
        assert_eq!(got.progress.ok, 3);
        assert_eq!(got.progress.error_codes.get("not_found"), Some(&1));
        // Another queue's expiry is not ours.
        assert_eq!(trusted(Some(&t), "other").attempt, 1);
    }

    #[test]
    fn progress_round_trips_and_refuses_unknown_codes() {
        let p = Progress { ok: 7, failed: 2, error_codes: BTreeMap::from([("timeout".into(), 2)]) };
        assert_eq!(Progress::from_header(&p.to_header()), Some(p));
        assert_eq!(Progress::from_header("ok=1;failed=1;made_up=1"), None);
        assert_eq!(Progress::from_header("garbage"), None);
        assert_eq!(Progress::from_header("ok=1;failed=0;"), Some(Progress { ok: 1, ..Default::default() }));
    }

    #[test]
    fn copies_stay_bounded_whatever_the_message_holds() {
        let huge = "x".repeat(1 << 20);
        let mut old = FieldTable::default();
        for i in 0..200 {
            old.insert(format!("h{i}").into(), string(&"y".repeat(1000)));
        }
        let deaths = FieldArray::from(vec![death(&huge, "expired", 1), death("r", "expired", 1)]);
        old.insert(headers::DEATH.into(), AMQPValue::FieldArray(deaths));
        old.insert("x-first-death-reason".into(), string(&huge));
        let h = CopyHeaders {
            reason: &huge,
            code: ErrorCode::Timeout,
            attempt: 2,
            job_id: Some(&huge),
            progress: Some(&Progress { ok: 1, ..Default::default() }),
            exchange: "asset-import",
            routing_key: "job.v1",
            retry_queue: "r",
        };
        let t = copy_headers(Some(&old), &h);
        assert!(table_size(&t) <= MAX_HEADER_TABLE_BYTES, "{}", table_size(&t));
        assert!(header_str(Some(&t), headers::REASON).unwrap().len() <= MAX_REASON_BYTES);
        assert!(header_u32(Some(&t), headers::HEADERS_DROPPED).unwrap() > 100);
        assert!(!t.inner().contains_key(&ShortString::from("x-first-death-reason")));
        // The retry queue's own entry is carried, so the broker keeps counting.
        assert_eq!(retry_passes(Some(&t), "r"), Some(1));
    }
}
