//! Embedded SQLite storage: one file (`coordinator.db` in the data directory), WAL journal, `synchronous=FULL` so a
//! committed transaction survives a power cut. The core's [`Record`]s are written by one writer task in batches
//! (one transaction per batch); a caller that must not answer before its records are durable (a job submission)
//! waits for a flush. At start the records are read back into a [`Restored`] for [`neurolov_core::Core::restore`].
//! Records are stored as JSON documents of the storage types below (the core's own types stay serde-free), except
//! the ledger's, which get columns: accounts with their totals (128-bit values as 16-byte big-endian blobs) and the
//! transfer log in the order it was applied. Each account also gets a small integer number, and transfers name their
//! accounts by number. Each account's history is a clustered `(account, seq)` table written in key order at every
//! commit: two indexes on the log, updated at random positions, had cost more than the log itself (175k vs 365k
//! transfers/s in `cargo bench -p neurolov-coordinator --bench ledger`). All the records of one core event arrive as one message and are
//! committed in one transaction, so a crash never keeps half an event (a task's verified result without its pay).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use neurolov_core::{InputData, JobRecord, JobSpec, JobState, JobView, NodeRecord, Record, Restored, TaskView};
use neurolov_ledger::{Account, AccountId, Changes, Kind, Transfer, TransferId};
use neurolov_protocol::Id;
use neurolov_protocol::messages::{ClaimedHardware, NodeKind, WgslBuffer};
use neurolov_scheduler::WorkHistory;
use neurolov_verify::replicas::Tolerance;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

/// Records written per transaction at most (one event's records are never split).
const MAX_BATCH: usize = 4096;
/// SQLite page cache (KiB).
const CACHE_KIB: u32 = 64 * 1024;
/// Transfers per multi-row INSERT (11 parameters each, well under SQLite's 32,766).
const TRANSFERS_PER_STATEMENT: usize = 2_000;
/// History entries per multi-row INSERT (2 parameters each).
const HISTORY_PER_STATEMENT: usize = 10_000;

/// What the writer task receives.
pub enum StoreMsg {
    /// The records of one core event, committed together.
    Records(Vec<Record>),
    /// Answered once every record sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Forget the results of archived jobs that finished before this time (ms): answered with how many task results
    /// went (their blobs are then collected, see `collect_blobs`).
    ExpireResults(u64, oneshot::Sender<u64>),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EvidenceDoc {
    task: u64,
    attempt: u32,
    commit: neurolov_protocol::Envelope,
    work: neurolov_protocol::messages::Work,
    reason: String,
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
    #[serde(default)]
    checks_passed: u64,
    #[serde(default)]
    provisional: Vec<(u64, u64)>,
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
        #[serde(default)]
        features: Vec<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished_ms: Option<u64>,
}

/// What an archived job keeps of each task (`jobs.archive`): what its status page showed when it left memory.
#[derive(serde::Serialize, serde::Deserialize)]
struct ArchivedTaskDoc {
    task: u64,
    node: Option<Id>,
    verified: bool,
    attempts: u32,
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
            features,
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
            features: features.clone(),
        },
    };
    JobDoc {
        id: r.id,
        client: r.client,
        spec,
        state: r.state.name().into(),
        reason: r.state.reason().map(str::to_string),
        tasks: r.tasks.clone(),
        idempotency_key: r.idempotency_key.clone(),
        finished_ms: r.finished_ms,
    }
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
            features,
        } => JobSpec::Wgsl {
            source_hash,
            entry_point,
            buffers,
            dispatch,
            tolerance: tolerance.map_or(Tolerance::Bitwise, |(abs, rel)| Tolerance::Float { abs, rel }),
            work_mflop,
            max_price_nano_per_gflop,
            min_reliability,
            features,
        },
    };
    let state = match d.state.as_str() {
        "done" => JobState::Done,
        "failed" => JobState::Failed { reason: d.reason.unwrap_or_default() },
        _ => JobState::Running { tasks_done: 0, tasks: d.tasks.len() },
    };
    JobRecord {
        id: d.id,
        client: d.client,
        spec,
        state,
        tasks: d.tasks,
        idempotency_key: d.idempotency_key,
        finished_ms: d.finished_ms,
    }
}

/// The writer's handle on the database: the pool, and each ledger account's number.
pub struct Store {
    pool: SqlitePool,
    nums: HashMap<AccountId, i64>,
    /// The next transfer's position in the log (history entries name transfers by it).
    next_seq: i64,
}

/// Opens (creating if needed) the database and reads back everything in it.
pub async fn open(path: &Path) -> anyhow::Result<(Store, Restored)> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // The transfer indexes grow with random keys: a larger page cache keeps their inserts off the disk.
        .pragma("cache_size", format!("-{}", CACHE_KIB));
    // Two connections: the writer's, and one for the reads of requests (account histories, archived jobs), which WAL
    // lets run beside the writer's transactions instead of waiting for them.
    let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
    for ddl in [
        "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS task_results (task INTEGER PRIMARY KEY, job INTEGER NOT NULL, hash TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ledger_accounts (num INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, \
         kind INTEGER NOT NULL, flags INTEGER NOT NULL, owner TEXT NOT NULL, created_ms INTEGER NOT NULL, \
         debits_pending BLOB NOT NULL, debits_posted BLOB NOT NULL, credits_pending BLOB NOT NULL, \
         credits_posted BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ledger_transfers (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, \
         debit INTEGER NOT NULL, credit INTEGER NOT NULL, amount INTEGER NOT NULL, pending_id BLOB, \
         timeout_ms INTEGER NOT NULL, flags INTEGER NOT NULL, code INTEGER NOT NULL, user_data INTEGER NOT NULL, \
         timestamp_ms INTEGER NOT NULL)",
        // Each account's transfers, for its history: one clustered table written in key order at each commit, instead
        // of two indexes on the transfer log updated at random positions (which cost more than the log itself).
        "CREATE TABLE IF NOT EXISTS ledger_history (account INTEGER NOT NULL, seq INTEGER NOT NULL, \
         PRIMARY KEY (account, seq)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS evidence (seq INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    migrate_jobs(&pool).await?;
    // A database from before accounts had numbers cannot be read; say so rather than fail half-way.
    let columns: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM pragma_table_info('ledger_accounts')").fetch_all(&pool).await?;
    if !columns.iter().any(|(c,)| c == "num") {
        anyhow::bail!(
            "{} was written by an older neurolov (its ledger tables lack account numbers); move it away",
            path.display()
        );
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
            checks_passed: d.checks_passed,
            provisional: d.provisional,
        });
    }
    // Archived jobs stay here: the core gets only what it holds in memory, and the counts of the rest.
    for (state, count) in sqlx::query_as::<_, (String, i64)>(
        "SELECT json_extract(doc, '$.state'), COUNT(*) FROM jobs WHERE archive IS NOT NULL GROUP BY 1",
    )
    .fetch_all(&pool)
    .await?
    {
        match state.as_str() {
            "done" => restored.archived.done = count as u64,
            _ => restored.archived.failed += count as u64,
        }
    }
    for (id, doc) in sqlx::query_as::<_, (i64, String)>("SELECT id, doc FROM jobs WHERE archive IS NULL ORDER BY id")
        .fetch_all(&pool)
        .await?
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
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM evidence ORDER BY seq").fetch_all(&pool).await? {
        let d: EvidenceDoc = serde_json::from_str(&doc)?;
        restored.evidence.push(neurolov_core::Evidence {
            task: d.task,
            attempt: d.attempt,
            commit: d.commit,
            work: d.work,
            reason: d.reason,
        });
    }
    migrate_history(&pool).await?;
    let (accounts, transfers, nums) = load_ledger(&pool).await?;
    restored.ledger_accounts = accounts;
    restored.ledger_transfers = transfers;
    let (last_seq,) =
        sqlx::query_as::<_, (i64,)>("SELECT COALESCE(MAX(seq), 0) FROM ledger_transfers").fetch_one(&pool).await?;
    Ok((Store { pool, nums, next_seq: last_seq + 1 }, restored))
}

/// Adds what archiving jobs needs to a database from before it: the `archive` column (NULL while the job is in
/// the core's memory) and an index to find a job by its client's idempotency key.
async fn migrate_jobs(pool: &SqlitePool) -> anyhow::Result<()> {
    let columns: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('jobs')").fetch_all(pool).await?;
    if !columns.iter().any(|(c,)| c == "archive") {
        sqlx::query("ALTER TABLE jobs ADD COLUMN archive TEXT").execute(pool).await?;
    }
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (json_extract(doc, '$.client'), \
         json_extract(doc, '$.idempotency_key')) WHERE json_extract(doc, '$.idempotency_key') IS NOT NULL",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A job as the store has it, for one that left the core's memory.
pub struct StoredJob {
    pub view: JobView,
    /// Its result as the blobs of its task results in task order, when every task has one.
    pub result: Option<Vec<String>>,
}

/// A job from the database (`GET /v1/jobs/{id}` of a job the core archived): its status as it was archived, and
/// its result's blobs.
pub async fn stored_job(pool: &SqlitePool, id: u64) -> anyhow::Result<Option<StoredJob>> {
    let Some((doc, archive)) =
        sqlx::query_as::<_, (String, Option<String>)>("SELECT doc, archive FROM jobs WHERE id = ?")
            .bind(id as i64)
            .fetch_optional(pool)
            .await?
    else {
        return Ok(None);
    };
    let record = job_record(serde_json::from_str(&doc)?);
    let hashes: HashMap<u64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT task, hash FROM task_results WHERE job = ?")
            .bind(id as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(t, h)| (t as u64, h))
            .collect();
    let tasks: Vec<TaskView> = match archive {
        Some(archive) => serde_json::from_str::<Vec<ArchivedTaskDoc>>(&archive)?
            .into_iter()
            .map(|t| TaskView { task: t.task, node: t.node, verified: t.verified, attempts: t.attempts })
            .collect(),
        // Left memory a moment ago, its archive record not yet written: what the results say.
        None => record
            .tasks
            .iter()
            .map(|&t| TaskView { task: t, node: None, verified: hashes.contains_key(&t), attempts: 0 })
            .collect(),
    };
    let result = (record.state == JobState::Done)
        .then(|| record.tasks.iter().map(|t| hashes.get(t).cloned()).collect::<Option<Vec<String>>>())
        .flatten();
    let result_shape = record.spec.result_shape();
    let view = JobView { id: record.id, client: record.client, state: record.state, tasks, result_shape };
    Ok(Some(StoredJob { view, result }))
}

/// The job `client` submitted under `key`, looked up in the database (the core forgets keys of archived jobs).
pub async fn job_for_key(pool: &SqlitePool, client: &Id, key: &str) -> anyhow::Result<Option<u64>> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM jobs WHERE json_extract(doc, '$.client') = ? AND json_extract(doc, '$.idempotency_key') = ? \
         AND json_extract(doc, '$.idempotency_key') IS NOT NULL",
    )
    .bind(client.to_string())
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(id,)| id as u64))
}

/// The blobs the database names: every recorded task result, and what each piece of evidence needs to be checked
/// again (the blob collector keeps them).
pub async fn recorded_blobs(pool: &SqlitePool) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut blobs: std::collections::HashSet<String> = sqlx::query_as::<_, (String,)>("SELECT hash FROM task_results")
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(h,)| h)
        .collect();
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM evidence").fetch_all(pool).await? {
        let d: EvidenceDoc = serde_json::from_str(&doc)?;
        let e = neurolov_core::Evidence {
            task: d.task,
            attempt: d.attempt,
            commit: d.commit,
            work: d.work,
            reason: d.reason,
        };
        neurolov_core::evidence_blobs(&e, &mut blobs);
    }
    Ok(blobs)
}

/// A database from before `ledger_history` kept the history in two indexes on the transfer log: they become the
/// history table, once.
async fn migrate_history(pool: &SqlitePool) -> anyhow::Result<()> {
    let (old,) = sqlx::query_as::<_, (i64,)>(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'ledger_transfers_debit'",
    )
    .fetch_one(pool)
    .await?;
    if old == 0 {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for sql in [
        "INSERT OR IGNORE INTO ledger_history (account, seq) SELECT debit, seq FROM ledger_transfers \
         UNION ALL SELECT credit, seq FROM ledger_transfers",
        "DROP INDEX ledger_transfers_debit",
        "DROP INDEX IF EXISTS ledger_transfers_credit",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    tracing::info!("ledger history moved to its own table");
    Ok(())
}

impl Store {
    /// A pool for reads (history); writes go through [`Store::commit`].
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }
}

fn u128_blob(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn blob_u128(b: &[u8]) -> anyhow::Result<u128> {
    let bytes: [u8; 16] = b.try_into().map_err(|_| anyhow::anyhow!("a stored 128-bit value has {} bytes", b.len()))?;
    Ok(u128::from_be_bytes(bytes))
}

type AccountRow = (i64, Vec<u8>, i64, i64, String, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
type TransferRow = (Vec<u8>, i64, i64, i64, Option<Vec<u8>>, i64, i64, i64, i64, i64);

/// The ledger's accounts (with stored totals), its transfer log in order, and each account's number.
async fn load_ledger(pool: &SqlitePool) -> anyhow::Result<(Vec<Account>, Vec<Transfer>, HashMap<AccountId, i64>)> {
    let mut accounts = Vec::new();
    let mut nums = HashMap::new();
    for (num, id, kind, flags, owner, created_ms, dp, dpo, cp, cpo) in sqlx::query_as::<_, AccountRow>(
        "SELECT num, id, kind, flags, owner, created_ms, debits_pending, debits_posted, credits_pending, \
         credits_posted FROM ledger_accounts",
    )
    .fetch_all(pool)
    .await?
    {
        nums.insert(AccountId(blob_u128(&id)?), num);
        accounts.push(Account {
            id: AccountId(blob_u128(&id)?),
            kind: Kind::from_code(kind as u16).ok_or_else(|| anyhow::anyhow!("unknown account kind {kind}"))?,
            flags: flags as u16,
            owner,
            debits_pending: blob_u128(&dp)?,
            debits_posted: blob_u128(&dpo)?,
            credits_pending: blob_u128(&cp)?,
            credits_posted: blob_u128(&cpo)?,
            created_ms: created_ms as u64,
        });
    }
    let rows = sqlx::query_as::<_, TransferRow>(
        "SELECT id, debit, credit, amount, pending_id, timeout_ms, flags, code, user_data, timestamp_ms \
         FROM ledger_transfers ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    let ids: HashMap<i64, AccountId> = nums.iter().map(|(&id, &num)| (num, id)).collect();
    let transfers = rows.into_iter().map(|r| transfer_of(r, &ids)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((accounts, transfers, nums))
}

fn transfer_of(row: TransferRow, ids: &HashMap<i64, AccountId>) -> anyhow::Result<Transfer> {
    let (id, debit, credit, amount, pending_id, timeout_ms, flags, code, user_data, ts) = row;
    let account = |num: i64| ids.get(&num).copied().ok_or_else(|| anyhow::anyhow!("a transfer names account #{num}"));
    Ok(Transfer {
        id: TransferId(blob_u128(&id)?),
        debit: account(debit)?,
        credit: account(credit)?,
        amount: amount as u64,
        pending_id: pending_id.map(|p| blob_u128(&p)).transpose()?.map(TransferId),
        timeout_ms: timeout_ms as u64,
        flags: flags as u16,
        code: code as u16,
        user_data: user_data as u64,
        timestamp_ms: ts as u64,
    })
}

/// One account's transfers, newest first.
pub async fn account_history(pool: &SqlitePool, account: AccountId, limit: u32) -> anyhow::Result<Vec<Transfer>> {
    let Some((num,)) = sqlx::query_as::<_, (i64,)>("SELECT num FROM ledger_accounts WHERE id = ?")
        .bind(u128_blob(account.0))
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query_as::<_, TransferRow>(
        "SELECT t.id, t.debit, t.credit, t.amount, t.pending_id, t.timeout_ms, t.flags, t.code, t.user_data, \
         t.timestamp_ms FROM ledger_history h JOIN ledger_transfers t ON t.seq = h.seq WHERE h.account = ?1 \
         ORDER BY h.seq DESC LIMIT ?2",
    )
    .bind(num)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    // The accounts on both sides of these transfers, by number.
    let mut nums: Vec<i64> = rows.iter().flat_map(|r| [r.1, r.2]).chain([num]).collect();
    nums.sort_unstable();
    nums.dedup();
    let mut ids = HashMap::new();
    for chunk in nums.chunks(HISTORY_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT num, id FROM ledger_accounts WHERE num IN (");
        let mut list = q.separated(", ");
        for n in chunk {
            list.push_bind(*n);
        }
        q.push(")");
        for (n, id) in q.build_query_as::<(i64, Vec<u8>)>().fetch_all(pool).await? {
            ids.insert(n, AccountId(blob_u128(&id)?));
        }
    }
    rows.into_iter().map(|r| transfer_of(r, &ids)).collect()
}

/// Writes the ledger changes of a whole transaction: each touched account once, in its latest state (new ones get
/// the next numbers), then every transfer in order from `next_seq`, then both accounts' history entries of each,
/// sorted. Returns the numbers given out and the next free position, for the caller to keep once the transaction
/// commits.
async fn write_ledger(
    tx: &mut sqlx::SqliteConnection,
    nums: &HashMap<AccountId, i64>,
    next_seq: i64,
    changes: &[&Changes],
) -> anyhow::Result<(HashMap<AccountId, i64>, i64)> {
    let transfers: Vec<&Transfer> = changes.iter().flat_map(|c| &c.transfers).collect();
    let mut latest: HashMap<AccountId, &Account> = HashMap::new();
    for a in changes.iter().flat_map(|c| c.created.iter().chain(&c.accounts)) {
        latest.insert(a.id, a);
    }
    let mut next = nums.values().max().copied().unwrap_or(0);
    let mut fresh = HashMap::new();
    for a in changes.iter().flat_map(|c| &c.created) {
        if !nums.contains_key(&a.id) && !fresh.contains_key(&a.id) {
            next += 1;
            fresh.insert(a.id, next);
        }
    }
    let num = |id: &AccountId| -> anyhow::Result<i64> {
        nums.get(id).or_else(|| fresh.get(id)).copied().ok_or_else(|| anyhow::anyhow!("account {id} has no number"))
    };
    let accounts: Vec<(i64, &Account)> =
        latest.into_values().map(|a| Ok((num(&a.id)?, a))).collect::<anyhow::Result<_>>()?;
    for chunk in accounts.chunks(TRANSFERS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO ledger_accounts (num, id, kind, flags, owner, created_ms, debits_pending, debits_posted, \
             credits_pending, credits_posted) ",
        );
        q.push_values(chunk, |mut row, (n, a)| {
            row.push_bind(*n)
                .push_bind(u128_blob(a.id.0))
                .push_bind(i64::from(a.kind.code()))
                .push_bind(i64::from(a.flags))
                .push_bind(a.owner.clone())
                .push_bind(a.created_ms as i64)
                .push_bind(u128_blob(a.debits_pending))
                .push_bind(u128_blob(a.debits_posted))
                .push_bind(u128_blob(a.credits_pending))
                .push_bind(u128_blob(a.credits_posted));
        });
        q.push(
            " ON CONFLICT(num) DO UPDATE SET debits_pending = excluded.debits_pending, \
             debits_posted = excluded.debits_posted, credits_pending = excluded.credits_pending, \
             credits_posted = excluded.credits_posted",
        );
        q.build().execute(&mut *tx).await?;
    }
    let rows: Vec<(i64, i64, i64, &Transfer)> = transfers
        .into_iter()
        .zip(next_seq..)
        .map(|(t, seq)| Ok((seq, num(&t.debit)?, num(&t.credit)?, t)))
        .collect::<anyhow::Result<_>>()?;
    for chunk in rows.chunks(TRANSFERS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO ledger_transfers (seq, id, debit, credit, amount, pending_id, timeout_ms, flags, code, \
             user_data, timestamp_ms) ",
        );
        q.push_values(chunk, |mut row, (seq, debit, credit, t)| {
            row.push_bind(*seq)
                .push_bind(u128_blob(t.id.0))
                .push_bind(*debit)
                .push_bind(*credit)
                .push_bind(t.amount as i64)
                .push_bind(t.pending_id.map(|p| u128_blob(p.0)))
                .push_bind(t.timeout_ms as i64)
                .push_bind(i64::from(t.flags))
                .push_bind(i64::from(t.code))
                .push_bind(t.user_data as i64)
                .push_bind(t.timestamp_ms as i64);
        });
        q.build().execute(&mut *tx).await?;
    }
    // In key order, the entries land in each account's last page one after another instead of all over the tree.
    let mut history: Vec<(i64, i64)> =
        rows.iter().flat_map(|&(seq, debit, credit, _)| [(debit, seq), (credit, seq)]).collect();
    history.sort_unstable();
    history.dedup();
    for chunk in history.chunks(HISTORY_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO ledger_history (account, seq) ");
        q.push_values(chunk, |mut row, (account, seq)| {
            row.push_bind(*account).push_bind(*seq);
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok((fresh, next_seq + rows.len() as i64))
}

/// The writer task: commits records in batches until every sender is gone.
pub async fn writer(mut store: Store, mut rx: mpsc::UnboundedReceiver<StoreMsg>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = 0;
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    if let StoreMsg::Records(r) = &m {
                        count += r.len();
                    }
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let mut records = Vec::new();
        let mut expiries = Vec::new();
        for m in batch {
            match m {
                StoreMsg::Records(r) => records.extend(r),
                StoreMsg::Flush(tx) => flushes.push(tx),
                StoreMsg::ExpireResults(before_ms, tx) => expiries.push((before_ms, tx)),
            }
        }
        if let Err(e) = store.commit(&records).await {
            // Losing durability silently would be worse than stopping: the coordinator cannot go on.
            tracing::error!(error = %e, "storage write failed; stopping");
            std::process::exit(70);
        }
        for f in flushes {
            let _ = f.send(());
        }
        // After the batch's records: a job archived in it has its end time on record.
        for (before_ms, tx) in expiries {
            match expire_results(&store.pool, before_ms).await {
                Ok(n) => {
                    let _ = tx.send(n);
                }
                Err(e) => tracing::warn!(error = %e, "expiring old results failed"),
            }
        }
    }
}

/// Deletes the task results of archived jobs that finished before `before_ms`; returns how many went.
async fn expire_results(pool: &SqlitePool, before_ms: u64) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM task_results WHERE job IN (SELECT id FROM jobs WHERE archive IS NOT NULL \
         AND json_extract(doc, '$.finished_ms') < ?)",
    )
    .bind(i64::try_from(before_ms).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

impl Store {
    /// Commits `records` in one transaction.
    pub async fn commit(&mut self, records: &[Record]) -> anyhow::Result<()> {
        let (fresh, next_seq) = commit(&self.pool, &self.nums, self.next_seq, records).await?;
        self.nums.extend(fresh);
        self.next_seq = next_seq;
        Ok(())
    }
}

async fn commit(
    pool: &SqlitePool,
    nums: &HashMap<AccountId, i64>,
    next_seq: i64,
    records: &[Record],
) -> anyhow::Result<(HashMap<AccountId, i64>, i64)> {
    if records.is_empty() {
        return Ok((HashMap::new(), next_seq));
    }
    let mut tx = pool.begin().await?;
    let mut ledger = Vec::new();
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
                    checks_passed: n.checks_passed,
                    provisional: n.provisional.clone(),
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
            Record::Ledger(changes) => ledger.push(&**changes),
            Record::NodeForgotten { id } => {
                sqlx::query("DELETE FROM nodes WHERE id = ?").bind(id.to_string()).execute(&mut *tx).await?;
            }
            Record::JobArchived { job, tasks } => {
                let archive: Vec<ArchivedTaskDoc> = tasks
                    .iter()
                    .map(|t| ArchivedTaskDoc { task: t.task, node: t.node, verified: t.verified, attempts: t.attempts })
                    .collect();
                sqlx::query("UPDATE jobs SET archive = ? WHERE id = ?")
                    .bind(serde_json::to_string(&archive)?)
                    .bind(*job as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Record::TaskResultRevoked { job, task } => {
                sqlx::query("DELETE FROM task_results WHERE task = ? AND job = ?")
                    .bind(*task as i64)
                    .bind(*job as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Record::Evidence(e) => {
                let doc = serde_json::to_string(&EvidenceDoc {
                    task: e.task,
                    attempt: e.attempt,
                    commit: e.commit.clone(),
                    work: e.work.clone(),
                    reason: e.reason.clone(),
                })?;
                sqlx::query("INSERT INTO evidence (doc) VALUES (?)").bind(doc).execute(&mut *tx).await?;
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
    let written = write_ledger(&mut tx, nums, next_seq, &ledger).await?;
    tx.commit().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use neurolov_ledger::{Bucket, Ledger, account_flags, codes};

    use super::*;

    /// A database whose history lives in two indexes on the transfer log (before `ledger_history`) is migrated on
    /// open and serves the same histories, newest first, with both sides of every transfer.
    #[tokio::test]
    async fn history_survives_the_move_from_indexes_to_its_own_table() {
        let dir = std::env::temp_dir().join(format!("neurolov-store-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coordinator.db");
        let (alice, bob) = (AccountId(1_001), AccountId(1_002));
        let mut ledger = Ledger::with_genesis(0).unwrap();
        for a in [alice, bob] {
            ledger.create_account(a, Kind::User, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, "test", 0).unwrap();
        }
        let fund = Bucket::EcosystemFund.account();
        let batch = [
            Transfer::new(TransferId(1), fund, alice, 1_000, codes::FAUCET),
            Transfer::new(TransferId(2), alice, bob, 300, codes::WALLET),
            Transfer::new(TransferId(3), bob, alice, 100, codes::WALLET),
        ];
        {
            let (mut store, _) = open(&path).await.unwrap();
            store.commit(&[Record::Ledger(Box::new(ledger.take_changes().unwrap()))]).await.unwrap();
            assert!(ledger.submit(&batch, 1).iter().all(|r| r.is_ok()));
            store.commit(&[Record::Ledger(Box::new(ledger.take_changes().unwrap()))]).await.unwrap();
            let ids = |h: Vec<Transfer>| h.into_iter().map(|t| t.id.0).collect::<Vec<_>>();
            assert_eq!(ids(account_history(&store.pool, alice, 10).await.unwrap()), [3, 2, 1]);
            assert_eq!(ids(account_history(&store.pool, bob, 10).await.unwrap()), [3, 2]);
            assert_eq!(ids(account_history(&store.pool, alice, 2).await.unwrap()), [3, 2]);
            // Back to the old layout.
            for sql in [
                "DROP TABLE ledger_history",
                "CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit)",
                "CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit)",
            ] {
                sqlx::query(sql).execute(&store.pool).await.unwrap();
            }
            store.pool.close().await;
        }
        let (mut store, restored) = open(&path).await.unwrap();
        assert_eq!(restored.ledger_transfers.len(), ledger.transfer_count());
        let history = account_history(&store.pool, alice, 10).await.unwrap();
        assert_eq!(history.iter().map(|t| t.id.0).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!((history[1].debit, history[1].credit, history[1].amount), (alice, bob, 300));
        // New transfers go on from the end of the log.
        assert!(ledger.submit(&[Transfer::new(TransferId(4), alice, bob, 1, codes::WALLET)], 2)[0].is_ok());
        store.commit(&[Record::Ledger(Box::new(ledger.take_changes().unwrap()))]).await.unwrap();
        let history = account_history(&store.pool, bob, 10).await.unwrap();
        assert_eq!(history.iter().map(|t| t.id.0).collect::<Vec<_>>(), [4, 3, 2]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
