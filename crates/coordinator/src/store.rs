//! Embedded SQLite storage: one file (`coordinator.db` in the data directory), WAL journal, `synchronous=FULL` so a
//! committed transaction survives a power cut. The core's [`Record`]s are written by one writer task in batches
//! (one transaction per batch); a caller that must not answer before its records are durable (a job submission)
//! waits for a flush. At start the records are read back into a [`Restored`] for [`neurolov_core::Core::restore`].
//! Records are stored as JSON documents of the storage types below (the core's own types stay serde-free).

use std::path::Path;
use std::str::FromStr;

use neurolov_core::{InputData, JobRecord, JobSpec, JobState, NodeRecord, Record, Restored};
use neurolov_protocol::Id;
use neurolov_protocol::messages::{ClaimedHardware, NodeKind, WgslBuffer};
use neurolov_scheduler::WorkHistory;
use neurolov_verify::replicas::Tolerance;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

/// Records written per transaction at most.
const MAX_BATCH: usize = 4096;

/// What the writer task receives.
pub(crate) enum StoreMsg {
    Record(Box<Record>),
    /// Answered once every record sent before it is committed.
    Flush(oneshot::Sender<()>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeDoc {
    id: Id,
    operator: Id,
    kind: NodeKind,
    claimed: ClaimedHardware,
    price_nano_per_gflop: u64,
    slots: u32,
    attested: bool,
    gflops_verified: f64,
    verified: u64,
    failed: u64,
    timed_out: u64,
    up_ms: u64,
    first_seen_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
enum InputDoc {
    Seeded { seed: u64 },
    Blob { hash: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum SpecDoc {
    Matmul {
        m: u32,
        n: u32,
        k: u32,
        a: InputDoc,
        b: InputDoc,
        max_price_nano_per_gflop: u64,
        min_reliability: f64,
    },
    Wgsl {
        source_hash: String,
        entry_point: String,
        buffers: Vec<WgslBuffer>,
        dispatch: [u32; 3],
        /// `None`: bitwise; `Some((abs, rel))`: float tolerance.
        tolerance: Option<(f32, f32)>,
        work_mflop: u64,
        max_price_nano_per_gflop: u64,
        min_reliability: f64,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JobDoc {
    id: u64,
    client: Id,
    spec: SpecDoc,
    /// `running`, `done` or `failed`.
    state: String,
    #[serde(default)]
    reason: Option<String>,
    tasks: Vec<u64>,
}

fn input_doc(i: &InputData) -> InputDoc {
    match i {
        InputData::Seeded { seed } => InputDoc::Seeded { seed: *seed },
        InputData::Blob { hash } => InputDoc::Blob { hash: hash.clone() },
    }
}

fn input(i: InputDoc) -> InputData {
    match i {
        InputDoc::Seeded { seed } => InputData::Seeded { seed },
        InputDoc::Blob { hash } => InputData::Blob { hash },
    }
}

fn job_doc(r: &JobRecord) -> JobDoc {
    let spec = match &r.spec {
        JobSpec::Matmul { m, n, k, a, b, max_price_nano_per_gflop, min_reliability } => SpecDoc::Matmul {
            m: *m,
            n: *n,
            k: *k,
            a: input_doc(a),
            b: input_doc(b),
            max_price_nano_per_gflop: *max_price_nano_per_gflop,
            min_reliability: *min_reliability,
        },
        JobSpec::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance,
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
        } => SpecDoc::Wgsl {
            source_hash: source_hash.clone(),
            entry_point: entry_point.clone(),
            buffers: buffers.clone(),
            dispatch: *dispatch,
            tolerance: match tolerance {
                Tolerance::Bitwise => None,
                Tolerance::Float { abs, rel } => Some((*abs, *rel)),
            },
            work_mflop: *work_mflop,
            max_price_nano_per_gflop: *max_price_nano_per_gflop,
            min_reliability: *min_reliability,
        },
    };
    let (state, reason) = match &r.state {
        JobState::Running { .. } => ("running", None),
        JobState::Done => ("done", None),
        JobState::Failed { reason } => ("failed", Some(reason.clone())),
    };
    JobDoc { id: r.id, client: r.client, spec, state: state.into(), reason, tasks: r.tasks.clone() }
}

fn job_record(d: JobDoc) -> JobRecord {
    let spec = match d.spec {
        SpecDoc::Matmul { m, n, k, a, b, max_price_nano_per_gflop, min_reliability } => {
            JobSpec::Matmul { m, n, k, a: input(a), b: input(b), max_price_nano_per_gflop, min_reliability }
        }
        SpecDoc::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance,
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
        } => JobSpec::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance: tolerance.map_or(Tolerance::Bitwise, |(abs, rel)| Tolerance::Float { abs, rel }),
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
        },
    };
    let state = match d.state.as_str() {
        "done" => JobState::Done,
        "failed" => JobState::Failed { reason: d.reason.unwrap_or_default() },
        _ => JobState::Running { tasks_done: 0, tasks: d.tasks.len() },
    };
    JobRecord { id: d.id, client: d.client, spec, state, tasks: d.tasks }
}

/// Opens (creating if needed) the database and reads back everything in it.
pub(crate) async fn open(path: &Path) -> anyhow::Result<(SqlitePool, Restored)> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    // One connection: the writer is the only one writing, and reads happen once at start.
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
    for ddl in [
        "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS task_results (task INTEGER PRIMARY KEY, job INTEGER NOT NULL, hash TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let mut restored = Restored::default();
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM nodes").fetch_all(&pool).await? {
        let d: NodeDoc = serde_json::from_str(&doc)?;
        restored.nodes.push(NodeRecord {
            id: d.id,
            operator: d.operator,
            kind: d.kind,
            claimed: d.claimed,
            price_nano_per_gflop: d.price_nano_per_gflop,
            slots: d.slots,
            attested: d.attested,
            gflops_verified: d.gflops_verified,
            history: WorkHistory {
                verified: d.verified,
                failed: d.failed,
                timed_out: d.timed_out,
                uptime_s: 0,
                known_s: 0,
            },
            up_ms: d.up_ms,
            first_seen_ms: d.first_seen_ms,
        });
    }
    for (id, doc) in sqlx::query_as::<_, (i64, String)>("SELECT id, doc FROM jobs ORDER BY id").fetch_all(&pool).await?
    {
        let record = job_record(serde_json::from_str(&doc)?);
        let results: Vec<(u64, String)> =
            sqlx::query_as::<_, (i64, String)>("SELECT task, hash FROM task_results WHERE job = ?")
                .bind(id)
                .fetch_all(&pool)
                .await?
                .into_iter()
                .map(|(t, h)| (t as u64, h))
                .collect();
        restored.jobs.push((record, results));
    }
    for (key, value) in sqlx::query_as::<_, (String, i64)>("SELECT key, value FROM meta").fetch_all(&pool).await? {
        match key.as_str() {
            "next_job" => restored.next_job = value as u64,
            "next_task" => restored.next_task = value as u64,
            _ => {}
        }
    }
    Ok((pool, restored))
}

/// The writer task: commits records in batches until every sender is gone.
pub(crate) async fn writer(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<StoreMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut records = Vec::new();
        for m in batch {
            match m {
                StoreMsg::Record(r) => records.push(*r),
                StoreMsg::Flush(tx) => flushes.push(tx),
            }
        }
        if let Err(e) = commit(&pool, &records).await {
            // Losing durability silently would be worse than stopping: the coordinator cannot go on.
            tracing::error!(error = %e, "storage write failed; stopping");
            std::process::exit(70);
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

async fn commit(pool: &SqlitePool, records: &[Record]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for r in records {
        match r {
            Record::Node(n) => {
                let doc = serde_json::to_string(&NodeDoc {
                    id: n.id,
                    operator: n.operator,
                    kind: n.kind,
                    claimed: n.claimed.clone(),
                    price_nano_per_gflop: n.price_nano_per_gflop,
                    slots: n.slots,
                    attested: n.attested,
                    gflops_verified: n.gflops_verified,
                    verified: n.history.verified,
                    failed: n.history.failed,
                    timed_out: n.history.timed_out,
                    up_ms: n.up_ms,
                    first_seen_ms: n.first_seen_ms,
                })?;
                sqlx::query(
                    "INSERT INTO nodes (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                )
                .bind(n.id.to_string())
                .bind(doc)
                .execute(&mut *tx)
                .await?;
            }
            Record::Job(j) => {
                let doc = serde_json::to_string(&job_doc(j))?;
                sqlx::query(
                    "INSERT INTO jobs (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                )
                .bind(j.id as i64)
                .bind(doc)
                .execute(&mut *tx)
                .await?;
            }
            Record::TaskResult { job, task, result_hash } => {
                sqlx::query("INSERT OR REPLACE INTO task_results (task, job, hash) VALUES (?, ?, ?)")
                    .bind(*task as i64)
                    .bind(*job as i64)
                    .bind(result_hash)
                    .execute(&mut *tx)
                    .await?;
            }
            Record::Ids { next_job, next_task } => {
                for (key, value) in [("next_job", *next_job), ("next_task", *next_task)] {
                    sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)")
                        .bind(key)
                        .bind(value as i64)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
