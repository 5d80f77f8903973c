//! PostgreSQL sink: one row per asset in `asset_metadata`, upserted on
//! `(org_id, project_id, asset_id)` so a redelivered job overwrites instead of
//! duplicating while another organisation's job can never touch the row; one row per job
//! in `job_completed`, keyed by `(org_id, job_id)` alike. The worker applies the versioned
//! migrations below at start, under an advisory lock so replicas starting together do not
//! race. Every statement runs under a `statement_timeout`, and a write still running
//! past it makes the sink not ready, so a table lock shows in `/readyz` instead of
//! hanging the worker silently.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use asset_schemas::{AssetResult, JobCompleted, Status};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::{MetadataSink, SinkError};

const SINK: &str = "postgres";

/// One step of the schema. Applied in order, each once, recorded in
/// `asset_sink_migrations`; a released migration is never edited, only followed.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "asset_metadata",
        sql: "CREATE TABLE asset_metadata (
            asset_id         text PRIMARY KEY,
            job_id           text NOT NULL,
            org_id           text NOT NULL,
            project_id       text NOT NULL,
            status           text NOT NULL CHECK (status IN ('ok', 'error')),
            data_type        text,
            metadata         jsonb,
            error_code       text,
            bytes_downloaded bigint NOT NULL,
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CHECK ((status = 'error') = (error_code IS NOT NULL))
        );
        CREATE INDEX asset_metadata_job_id ON asset_metadata (job_id);
        CREATE INDEX asset_metadata_org_project ON asset_metadata (org_id, project_id);",
    },
    Migration {
        version: 2,
        name: "job_completed",
        sql: "CREATE TABLE job_completed (
            job_id        text PRIMARY KEY,
            org_id        text NOT NULL,
            project_id    text NOT NULL,
            assets_total  bigint NOT NULL,
            assets_ok     bigint NOT NULL,
            assets_failed bigint NOT NULL,
            error_codes   jsonb NOT NULL,
            completed_at  timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now()
        );",
    },
    // Rows were keyed by asset_id alone: a job of another organisation reusing an asset
    // id replaced the victim's row. Existing rows are unique by asset_id, hence by the
    // wider key too, so the change needs no data migration.
    Migration {
        version: 3,
        name: "keys_carry_the_org",
        sql: "ALTER TABLE asset_metadata DROP CONSTRAINT asset_metadata_pkey;
        ALTER TABLE asset_metadata ADD PRIMARY KEY (org_id, project_id, asset_id);
        DROP INDEX IF EXISTS asset_metadata_org_project;
        ALTER TABLE job_completed DROP CONSTRAINT job_completed_pkey;
        ALTER TABLE job_completed ADD PRIMARY KEY (org_id, job_id);",
    },
];

/// Any 64-bit constant, the same for every replica: it names the migration lock.
const MIGRATION_LOCK: i64 = 0x6173_7365_745f_736b; // "asset_sk"

const UPSERT_ASSET: &str = "INSERT INTO asset_metadata
        (asset_id, job_id, org_id, project_id, status, data_type, metadata, error_code, bytes_downloaded, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
    ON CONFLICT (org_id, project_id, asset_id) DO UPDATE SET
        job_id = EXCLUDED.job_id,
        status = EXCLUDED.status,
        data_type = EXCLUDED.data_type,
        metadata = EXCLUDED.metadata,
        error_code = EXCLUDED.error_code,
        bytes_downloaded = EXCLUDED.bytes_downloaded,
        updated_at = now()";

const UPSERT_JOB: &str = "INSERT INTO job_completed
        (job_id, org_id, project_id, assets_total, assets_ok, assets_failed, error_codes, completed_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, CAST($8::text AS timestamptz), now())
    ON CONFLICT (org_id, job_id) DO UPDATE SET
        project_id = EXCLUDED.project_id,
        assets_total = EXCLUDED.assets_total,
        assets_ok = EXCLUDED.assets_ok,
        assets_failed = EXCLUDED.assets_failed,
        error_codes = EXCLUDED.error_codes,
        completed_at = EXCLUDED.completed_at,
        updated_at = now()";

/// How long one statement may run by default (`statement_timeout`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes results into PostgreSQL through a small connection pool.
pub struct PostgresSink {
    pool: Pool,
    statement_timeout: Duration,
    /// Start times of the writes in progress, to tell a hung sink from a slow one.
    in_flight: Mutex<BTreeMap<u64, Instant>>,
    next_write: AtomicU64,
}

/// Removes its write from the in-flight list however the write ends.
struct InFlight<'a> {
    sink: &'a PostgresSink,
    id: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.sink.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("pool_size", &self.pool.status().max_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl PostgresSink {
    /// Connects (plain TCP, no TLS), checks the server answers and applies migrations.
    pub async fn connect(database_url: &str) -> Result<Self, SinkError> {
        Self::open(database_url, None, DEFAULT_STATEMENT_TIMEOUT).await
    }

    /// As [`PostgresSink::connect`], in `schema` when one is named (see
    /// [`PostgresSink::connect_in_schema`]), with another statement timeout.
    pub async fn connect_with(
        database_url: &str,
        schema: Option<&str>,
        statement_timeout: Duration,
    ) -> Result<Self, SinkError> {
        match schema {
            Some(schema) => {
                check_schema_name(schema)?;
                Self::open(database_url, Some(schema), statement_timeout).await
            }
            None => Self::open(database_url, None, statement_timeout).await,
        }
    }

    /// As [`PostgresSink::connect`], with every table in `schema` (created if missing).
    /// Lets tests, or several deployments sharing one database, stay apart.
    pub async fn connect_in_schema(database_url: &str, schema: &str) -> Result<Self, SinkError> {
        Self::connect_with(database_url, Some(schema), DEFAULT_STATEMENT_TIMEOUT).await
    }

    async fn open(
        database_url: &str,
        schema: Option<&str>,
        statement_timeout: Duration,
    ) -> Result<Self, SinkError> {
        // The URL may hold a password: never echo it.
        let mut config: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| SinkError::Config(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let mut options = config.get_options().map(str::to_owned).unwrap_or_default();
        if let Some(schema) = schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        // A write blocked on a lock fails after this instead of hanging the job.
        let timeout_ms = statement_timeout.as_millis().max(1);
        options.push_str(&format!(" -c statement_timeout={timeout_ms}"));
        config.options(options.trim());
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| SinkError::Config(format!("postgres pool: {e}")))?;

        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(source) => {
                SinkError::Connect { sink: SINK, source: Box::new(source) }
            }
            other => SinkError::Pool(other),
        })?;
        migrate(&mut client, schema).await?;
        drop(client);
        Ok(PostgresSink {
            pool,
            statement_timeout,
            in_flight: Mutex::new(BTreeMap::new()),
            next_write: AtomicU64::new(0),
        })
    }

    fn track(&self) -> InFlight<'_> {
        let id = self.next_write.fetch_add(1, Ordering::Relaxed);
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
        InFlight { sink: self, id }
    }

    /// Whether a write has been running for longer than the statement timeout allows
    /// (plus a second for the round trip): the server is not completing writes.
    fn write_is_stuck(&self) -> bool {
        let limit = self.statement_timeout + Duration::from_secs(1);
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.values().any(|started| started.elapsed() > limit)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SinkError> {
        self.pool.get().await.map_err(SinkError::Pool)
    }
}

fn check_schema_name(schema: &str) -> Result<(), SinkError> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if !plain {
        return Err(SinkError::Config(format!(
            "schema name {schema:?} must be 1-63 lowercase letters, digits or '_', not starting with a digit"
        )));
    }
    Ok(())
}

/// Applies every migration not yet recorded, in one transaction. The schema, when one
/// is named, is created under the same lock: `CREATE SCHEMA IF NOT EXISTS` alone races
/// between replicas starting together (a unique violation on pg_namespace).
async fn migrate(client: &mut deadpool_postgres::Object, schema: Option<&str>) -> Result<(), SinkError> {
    let pg = |op| move |source| SinkError::Postgres { op, source };
    let tx = client.transaction().await.map_err(pg("begin migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg("migration lock"))?;
    if let Some(schema) = schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(pg("create schema"))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS asset_sink_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg("create migrations table"))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM asset_sink_migrations", &[])
        .await
        .map_err(pg("read migrations"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let failed = |source| SinkError::Migration { version: m.version, name: m.name, source };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO asset_sink_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "applied postgres migration");
    }
    tx.commit().await.map_err(pg("commit migrations"))
}

fn to_i64(what: &str, n: u64) -> Result<i64, SinkError> {
    i64::try_from(n).map_err(|_| SinkError::Unrepresentable(format!("{what} {n} (beyond bigint)")))
}

#[async_trait::async_trait]
impl MetadataSink for PostgresSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn write(&self, r: &AssetResult) -> Result<(), SinkError> {
        let status = match r.status {
            Status::Ok => "ok",
            Status::Error => "error",
        };
        let data_type = r.metadata.as_ref().map(|m| m.data_type.as_str());
        let metadata = r
            .metadata
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|source| SinkError::Serialize { what: "asset metadata", source })?;
        // A failed asset always carries a code: the table's CHECK insists, and a result
        // marked `error` without one is recorded as `internal` rather than lost.
        let error_code = match r.status {
            Status::Ok => None,
            Status::Error => {
                Some(r.error.as_ref().map_or(asset_core::ErrorCode::Internal, |e| e.code).as_str())
            }
        };
        let bytes = to_i64("bytes_downloaded", r.bytes_downloaded)?;

        let _in_flight = self.track();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(UPSERT_ASSET)
            .await
            .map_err(|source| SinkError::Postgres { op: "prepare asset upsert", source })?;
        client
            .execute(
                &stmt,
                &[
                    &r.asset_id,
                    &r.job_id,
                    &r.org_id,
                    &r.project_id,
                    &status,
                    &data_type,
                    &metadata,
                    &error_code,
                    &bytes,
                ],
            )
            .await
            .map_err(|source| SinkError::Postgres { op: "upsert asset_metadata", source })?;
        Ok(())
    }

    async fn job_completed(&self, d: &JobCompleted) -> Result<(), SinkError> {
        let codes = serde_json::to_value(&d.error_codes)
            .map_err(|source| SinkError::Serialize { what: "job error codes", source })?;
        let _in_flight = self.track();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(UPSERT_JOB)
            .await
            .map_err(|source| SinkError::Postgres { op: "prepare job upsert", source })?;
        client
            .execute(
                &stmt,
                &[
                    &d.job_id,
                    &d.org_id,
                    &d.project_id,
                    &i64::from(d.assets_total),
                    &i64::from(d.assets_ok),
                    &i64::from(d.assets_failed),
                    &codes,
                    &d.completed_at,
                ],
            )
            .await
            .map_err(|source| SinkError::Postgres { op: "upsert job_completed", source })?;
        Ok(())
    }

    /// Ready when no write hangs past the statement timeout and a write could start
    /// now: the lock an INSERT takes on both tables is granted at once (NOWAIT, rolled
    /// back), so a table locked by a migration or an operator reads as not ready.
    async fn ready(&self) -> bool {
        if self.write_is_stuck() {
            return false;
        }
        let check = async {
            let Ok(mut client) = self.client().await else { return false };
            let Ok(tx) = client.transaction().await else { return false };
            let locked = tx
                .batch_execute("LOCK TABLE asset_metadata, job_completed IN ROW EXCLUSIVE MODE NOWAIT")
                .await
                .is_ok();
            tx.rollback().await.is_ok() && locked
        };
        // A probe must answer quickly; a server that does not is not ready.
        tokio::time::timeout(Duration::from_secs(3), check).await.unwrap_or(false)
    }
}
