//! The PostgreSQL sink against a real server (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): the conformance suite, the table's exact
//! shape, and migrations that replicas may apply at the same time. Each test works in
//! its own schema.

mod sink_conformance;

use asset_schemas::{AssetResult, Status};
use asset_sink::{MetadataSink, PostgresSink, SinkError};
use serde_json::{Value, json};
use sink_conformance::{ReadBack, Record, conformance, job, require, unique};
use tokio_postgres::{Client, NoTls};

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A private schema, dropped when the test ends well.
struct Db {
    client: Client,
    schema: String,
}

impl Db {
    async fn new(tag: &str) -> Option<Db> {
        let (client, conn) = require("PostgreSQL", tokio_postgres::connect(&database_url(), NoTls).await)?;
        tokio::spawn(conn);
        Some(Db { client, schema: unique(tag) })
    }

    async fn sink(&self) -> Result<PostgresSink, SinkError> {
        PostgresSink::connect_in_schema(&database_url(), &self.schema).await
    }

    async fn drop_schema(&self) {
        self.client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await.unwrap();
    }
}

#[async_trait::async_trait]
impl ReadBack for Db {
    async fn records(&self, asset_id: &str) -> Vec<Record> {
        let sql = format!(
            "SELECT asset_id, job_id, org_id, project_id, status, data_type, metadata, error_code, bytes_downloaded
             FROM {}.asset_metadata WHERE asset_id = $1",
            self.schema
        );
        self.client
            .query(&sql, &[&asset_id])
            .await
            .unwrap()
            .iter()
            .map(|r| Record {
                asset_id: r.get(0),
                job_id: r.get(1),
                org_id: r.get(2),
                project_id: r.get(3),
                status: r.get(4),
                data_type: r.get(5),
                metadata: r.get(6),
                error_code: r.get(7),
                bytes_downloaded: u64::try_from(r.get::<_, i64>(8)).unwrap(),
            })
            .collect()
    }

    async fn completions(&self, job_id: &str) -> Vec<Value> {
        let sql = format!(
            "SELECT job_id, assets_total, assets_ok, assets_failed, error_codes,
                    to_char(completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM {}.job_completed WHERE job_id = $1",
            self.schema
        );
        self.client
            .query(&sql, &[&job_id])
            .await
            .unwrap()
            .iter()
            .map(|r| {
                json!({
                    "job_id": r.get::<_, String>(0),
                    "assets_total": r.get::<_, i64>(1),
                    "assets_ok": r.get::<_, i64>(2),
                    "assets_failed": r.get::<_, i64>(3),
                    "error_codes": r.get::<_, Value>(4),
                    "completed_at": r.get::<_, String>(5),
                })
            })
            .collect()
    }

    fn is_store(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn postgres_sink_conforms() {
    let Some(db) = Db::new("sink_pg").await else { return };
    let sink = db.sink().await.unwrap();
    conformance(&sink, &db, &db.schema).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn the_table_has_exactly_the_documented_columns() {
    let Some(db) = Db::new("sink_pg_cols").await else { return };
    db.sink().await.unwrap();
    let rows = db
        .client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'asset_metadata' ORDER BY ordinal_position",
            &[&db.schema],
        )
        .await
        .unwrap();
    let columns: Vec<(String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let want = [
        ("asset_id", "text", "NO"),
        ("job_id", "text", "NO"),
        ("org_id", "text", "NO"),
        ("project_id", "text", "NO"),
        ("status", "text", "NO"),
        ("data_type", "text", "YES"),
        ("metadata", "jsonb", "YES"),
        ("error_code", "text", "YES"),
        ("bytes_downloaded", "bigint", "NO"),
        ("updated_at", "timestamp with time zone", "NO"),
    ];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(columns, want);
    assert_eq!(db.primary_key("asset_metadata").await, ["org_id", "project_id", "asset_id"]);
    assert_eq!(db.primary_key("job_completed").await, ["org_id", "job_id"]);
    db.drop_schema().await;
}

impl Db {
    /// The primary key's columns, in key order.
    async fn primary_key(&self, table: &str) -> Vec<String> {
        self.client
            .query(
                "SELECT a.attname::text FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord",
                &[&format!("{}.{table}", self.schema)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// Rows were keyed by asset_id alone: another organisation's job reusing an asset id
/// replaced the victim's row, org_id included.
#[tokio::test]
async fn another_orgs_job_reusing_an_asset_id_never_touches_the_row() {
    let Some(db) = Db::new("sink_pg_tenants").await else { return };
    let sink = db.sink().await.unwrap();
    let victim = job(&db.schema);
    let mut attacker = victim.clone();
    attacker.org_id = "org-attacker".into();
    attacker.job_id = "job-attacker".into();
    let mine = AssetResult::ok(
        &victim,
        &victim.assets[0],
        sink_conformance::full_metadata(),
        10,
        Default::default(),
    );
    sink.write(&mine).await.unwrap();
    let mut other_meta = sink_conformance::full_metadata();
    other_meta.width = Some(1);
    let theirs = AssetResult::ok(&attacker, &attacker.assets[0], other_meta, 20, Default::default());
    sink.write(&theirs).await.unwrap();
    let done = asset_schemas::JobCompleted::for_job(
        &attacker,
        std::slice::from_ref(&theirs),
        "2026-01-01T00:00:00Z",
    );
    let mut victim_done = done.clone();
    victim_done.org_id = victim.org_id.clone();
    victim_done.job_id = "shared-job".into();
    let mut attacker_done = done;
    attacker_done.job_id = "shared-job".into();
    sink.job_completed(&victim_done).await.unwrap();
    sink.job_completed(&attacker_done).await.unwrap();

    let mut rows = db.records(&mine.asset_id).await;
    rows.sort_by(|a, b| a.org_id.cmp(&b.org_id));
    assert_eq!(rows.len(), 2, "{rows:?}");
    let victims: Vec<&Record> = rows.iter().filter(|r| r.org_id == victim.org_id).collect();
    assert_eq!(victims.len(), 1);
    assert_eq!(victims[0].job_id, victim.job_id);
    assert_eq!(victims[0].bytes_downloaded, 10);
    assert_eq!(victims[0].metadata.as_ref().unwrap()["width"], 1920);
    let sql = format!("SELECT count(*) FROM {}.job_completed WHERE job_id = 'shared-job'", db.schema);
    let n: i64 = db.client.query_one(&sql, &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "one completion per organisation");
    db.drop_schema().await;
}

/// A table made by the earlier migrations keeps its rows and gets the wider key.
#[tokio::test]
async fn a_table_keyed_by_asset_id_alone_is_migrated_with_its_rows() {
    let Some(db) = Db::new("sink_pg_migrate_key").await else { return };
    let s = &db.schema;
    db.client.batch_execute(&format!("CREATE SCHEMA {s}; SET search_path = {s};")).await.unwrap();
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {s}.asset_sink_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());"
        ))
        .await
        .unwrap();
    for m in &asset_sink::MIGRATIONS[..2] {
        db.client.batch_execute(m.sql).await.unwrap();
        db.client
            .execute(
                &format!("INSERT INTO {s}.asset_sink_migrations VALUES ($1, $2)"),
                &[&m.version, &m.name],
            )
            .await
            .unwrap();
    }
    db.client
        .batch_execute(&format!(
            "INSERT INTO {s}.asset_metadata (asset_id, job_id, org_id, project_id, status, bytes_downloaded)
             VALUES ('old-1', 'j', 'o', 'p', 'ok', 5);
             INSERT INTO {s}.job_completed VALUES ('j', 'o', 'p', 1, 1, 0, '{{}}', now(), now());"
        ))
        .await
        .unwrap();
    db.client.batch_execute("SET search_path = public").await.unwrap();
    db.sink().await.unwrap();
    assert_eq!(db.primary_key("asset_metadata").await, ["org_id", "project_id", "asset_id"]);
    assert_eq!(db.records("old-1").await.len(), 1, "the row survived");
    let n: i64 =
        db.client.query_one(&format!("SELECT count(*) FROM {s}.job_completed"), &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    db.drop_schema().await;
}

/// A write blocked by a lock used to hang while /readyz said ready. It now fails after
/// the statement timeout, as "unavailable" (the worker pauses rather than spending the
/// job's attempts), and the sink is not ready until the lock goes.
#[tokio::test]
async fn a_write_blocked_by_a_lock_times_out_and_the_sink_is_not_ready_until_it_goes() {
    let Some(db) = Db::new("sink_pg_locked").await else { return };
    let timeout = std::time::Duration::from_millis(500);
    let sink = PostgresSink::connect_with(&database_url(), Some(&db.schema), timeout).await.unwrap();
    assert!(sink.ready().await);
    let (locker, conn) = tokio_postgres::connect(&database_url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE {}.asset_metadata IN SHARE MODE", db.schema))
        .await
        .unwrap();
    let job = job(&db.schema);
    let r = AssetResult::ok(&job, &job.assets[0], sink_conformance::full_metadata(), 1, Default::default());
    let started = std::time::Instant::now();
    let err = sink.write(&r).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the write did not hang");
    assert!(err.is_retryable() && err.is_unavailable(), "{err}");
    assert!(!sink.ready().await, "a table no write can enter is not ready");
    locker.batch_execute("COMMIT").await.unwrap();
    assert!(sink.ready().await);
    sink.write(&r).await.unwrap();
    db.drop_schema().await;
}

#[tokio::test]
async fn replicas_starting_together_apply_each_migration_once() {
    let Some(db) = Db::new("sink_pg_mig").await else { return };
    let (a, b, c) = tokio::join!(db.sink(), db.sink(), db.sink());
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    // And once more after the fact: nothing left to apply, nothing fails.
    let d = db.sink().await.unwrap();
    let sql = format!("SELECT version, name FROM {}.asset_sink_migrations ORDER BY version", db.schema);
    let applied: Vec<(i32, String)> =
        db.client.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(i32, String)> =
        asset_sink::MIGRATIONS.iter().map(|m| (m.version, m.name.to_string())).collect();
    assert_eq!(applied, want);
    assert!(a.ready().await && d.ready().await);
    db.drop_schema().await;
}

#[tokio::test]
async fn an_error_result_without_an_error_body_is_stored_as_internal() {
    let Some(db) = Db::new("sink_pg_internal").await else { return };
    let sink = db.sink().await.unwrap();
    let job = job(&db.schema);
    let mut r =
        AssetResult::ok(&job, &job.assets[0], sink_conformance::full_metadata(), 1, Default::default());
    r.status = Status::Error;
    r.metadata = None;
    sink.write(&r).await.unwrap();
    let rec = db.records(&r.asset_id).await;
    assert_eq!(rec.len(), 1);
    assert_eq!((rec[0].status.as_str(), rec[0].error_code.as_deref()), ("error", Some("internal")));
    db.drop_schema().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_connect_error() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = PostgresSink::connect("postgres://postgres@127.0.0.1:1/test").await.unwrap_err();
    assert!(matches!(err, SinkError::Connect { sink: "postgres", .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.code(), asset_core::ErrorCode::Upstream);

    let err = PostgresSink::connect("not a url").await.unwrap_err();
    assert!(matches!(err, SinkError::Config(_)) && !err.is_retryable(), "{err:?}");
    let err = PostgresSink::connect_in_schema(&database_url(), "x; DROP TABLE y").await.unwrap_err();
    assert!(matches!(err, SinkError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_password_in_the_url_never_reaches_an_error_message() {
    let err = PostgresSink::connect("postgres://postgres:hunter2-secret@127.0.0.1:1/test").await.unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!format!("{err:?}").contains("hunter2"));
}
