//! Embedded SQLite storage: one file (`coordinator.db` in the data directory), WAL journal. The core's [`Record`]s
//! are written by one writer task in batches (one transaction per batch, its statements in one call). A commit is
//! written at once (`synchronous=NORMAL`: it survives the process being killed) and forced to disk — an fsync of the
//! WAL, which covers every earlier commit too — before anyone is told of it: a caller that must not answer before its
//! records are durable (a job submission, a transfer) waits for a flush, and a batch in which a job ends is synced
//! (its client is told next). Nothing stays off the disk longer than [`MAX_UNSYNCED`]: a power cut loses at most
//! that much of what nobody was told, where an fsync per commit had cost every commit 300 µs here. At start the records are read back into a [`Restored`] for [`neurolov_core::Core::restore`].
//! Records are stored as JSON documents (`docs.rs`; the core's own types stay serde-free), except the ledger's
//! (`ledger.rs`), which get columns: accounts with their totals (128-bit values as 16-byte big-endian blobs) and the
//! transfer log in the order it was applied. Each account also gets a small integer number, and transfers name their
//! accounts by number. Each account's history is a clustered `(account, seq)` table written in key order at every
//! commit: two indexes on the log, updated at random positions, had cost more than the log itself (175k vs 365k
//! transfers/s in `cargo bench -p neurolov-coordinator --bench ledger`). All the records of one core event arrive as one message and are
//! committed in one transaction, so a crash never keeps half an event (a task's verified result without its pay).
//! Jobs the core has let go of are read back on request (`jobs.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use neurolov_core::{Record, Restored};
use neurolov_ledger::{AccountId, Changes};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

mod docs;
mod jobs;
mod ledger;

use docs::{
    ArchivedTaskDoc, deposit_doc, evidence, evidence_doc, job_doc, job_record, node_doc, node_record, withdrawal,
    withdrawal_doc,
};
pub use jobs::{StoredJob, inline_results, job_for_key, recorded_blobs, stored_job};
use jobs::{expire_results, migrate_jobs};
pub use ledger::account_history;
use ledger::{load_ledger, migrate_history, write_ledger};

/// Records written per transaction at most (one event's records are never split).
const MAX_BATCH: usize = 4096;
/// Longest a commit nobody waits on stays off the disk (in the OS's cache: safe from the process being killed, not
/// from a power cut) before the writer forces it there.
const MAX_UNSYNCED: std::time::Duration = std::time::Duration::from_millis(200);
/// SQLite page cache (KiB).
const CACHE_KIB: u32 = 64 * 1024;

/// What the writer task receives.
pub enum StoreMsg {
    /// The records of one core event, committed together.
    Records(Vec<Record>),
    /// Answered once every record sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Forget the results of archived jobs that finished before this time (ms): answered with how many task results
    /// went (their blobs are then collected, see `collect_blobs`).
    ExpireResults(u64, oneshot::Sender<u64>),
    /// Keep a shell record — an API key (by the hash of its secret), a published model (by its name) — answered once
    /// it is on disk.
    Doc { table: DocTable, key: String, doc: String, done: oneshot::Sender<()> },
}

/// The tables of the shell's own records (not the core's): a fixed set, never a name from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocTable {
    ApiKeys,
    PublishedModels,
}

impl DocTable {
    fn upsert(self) -> &'static str {
        match self {
            DocTable::ApiKeys => "INSERT OR REPLACE INTO api_keys (hash, doc) VALUES (?, ?)",
            DocTable::PublishedModels => "INSERT OR REPLACE INTO published_models (name, doc) VALUES (?, ?)",
        }
    }
}

/// The writer's handle on the database: the pool, its own connection, and each ledger account's number.
pub struct Store {
    pool: SqlitePool,
    /// The writer's own connection. It commits with `synchronous=NORMAL` (the WAL is written, which survives the
    /// process being killed, but not forced to disk); a commit someone waits on then forces the WAL to disk with one
    /// fsync, which covers every earlier commit's frames too (`Store::commit_with`).
    conn: sqlx::SqliteConnection,
    /// The WAL file, to fsync.
    wal: std::path::PathBuf,
    /// When the oldest commit not yet forced to disk was made.
    unsynced_since: Option<std::time::Instant>,
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
    // The writer has a connection of its own (`Store::conn`); the pool serves the reads of requests (account
    // histories, archived jobs), which WAL lets run beside the writer's transactions instead of waiting for them.
    let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options.clone()).await?;
    create_schema(&pool, path).await?;
    let mut restored = Restored::default();
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM nodes").fetch_all(&pool).await? {
        restored.nodes.push(node_record(serde_json::from_str(&doc)?));
    }
    restore_jobs(&pool, &mut restored).await?;
    for (key, value) in sqlx::query_as::<_, (String, i64)>("SELECT key, value FROM meta").fetch_all(&pool).await? {
        match key.as_str() {
            "next_job" => restored.next_job = value as u64,
            "next_task" => restored.next_task = value as u64,
            _ => {}
        }
    }
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM evidence ORDER BY seq").fetch_all(&pool).await? {
        restored.evidence.push(evidence(serde_json::from_str(&doc)?));
    }
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM withdrawals").fetch_all(&pool).await? {
        restored.withdrawals.push(withdrawal(serde_json::from_str(&doc)?)?);
    }
    for (doc,) in sqlx::query_as::<_, (String,)>("SELECT doc FROM proposals ORDER BY id").fetch_all(&pool).await? {
        restored.proposals.push(serde_json::from_str(&doc)?);
    }
    migrate_history(&pool).await?;
    let (accounts, transfers, nums) = load_ledger(&pool).await?;
    restored.ledger_accounts = accounts;
    restored.ledger_transfers = transfers;
    let (last_seq,) =
        sqlx::query_as::<_, (i64,)>("SELECT COALESCE(MAX(seq), 0) FROM ledger_transfers").fetch_one(&pool).await?;
    let mut conn = sqlx::ConnectOptions::connect(&options.synchronous(SqliteSynchronous::Normal)).await?;
    // Durability rests on the WAL (`Store::commit_with` fsyncs it): it must be the journal, and its directory entry
    // on disk.
    let (mode,) = sqlx::query_as::<_, (String,)>("PRAGMA journal_mode").fetch_one(&mut conn).await?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "the database's journal is {mode}, not a WAL");
    let wal = path.with_file_name(format!("{}-wal", path.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
    anyhow::ensure!(wal.exists(), "no write-ahead log at {}", wal.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok((Store { pool, conn, wal, unsynced_since: None, nums, next_seq: last_seq + 1 }, restored))
}

/// The tables, created if missing, and what older databases lack added.
async fn create_schema(pool: &SqlitePool, path: &Path) -> anyhow::Result<()> {
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
        "CREATE TABLE IF NOT EXISTS withdrawals (id TEXT PRIMARY KEY, account TEXT NOT NULL, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS deposits (id TEXT PRIMARY KEY, account TEXT NOT NULL, doc TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS deposits_by_account ON deposits (account)",
        // How far each chain adapter has looked for deposits (written only after what it credited is durable).
        "CREATE TABLE IF NOT EXISTS chain_cursors (chain TEXT PRIMARY KEY, cursor TEXT NOT NULL)",
        // Governance's proposals (issue 16): the core's own type, as JSON.
        "CREATE TABLE IF NOT EXISTS proposals (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)",
        // Telegram initData already used to sign in (issue 15), kept while it is young enough to be accepted.
        "CREATE TABLE IF NOT EXISTS telegram_sign_ins (hash TEXT PRIMARY KEY, auth_date INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, doc TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS published_models (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(pool).await?;
    }
    migrate_jobs(pool).await?;
    // A database from before accounts had numbers cannot be read; say so rather than fail half-way.
    let columns: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM pragma_table_info('ledger_accounts')").fetch_all(pool).await?;
    if !columns.iter().any(|(c,)| c == "num") {
        anyhow::bail!(
            "{} was written by an older neurolov (its ledger tables lack account numbers); move it away",
            path.display()
        );
    }
    Ok(())
}

/// The jobs the core holds in memory, with their results; archived jobs stay here, counted by outcome.
async fn restore_jobs(pool: &SqlitePool, restored: &mut Restored) -> anyhow::Result<()> {
    for (state, count) in sqlx::query_as::<_, (String, i64)>(
        "SELECT json_extract(doc, '$.state'), COUNT(*) FROM jobs WHERE archive IS NOT NULL GROUP BY 1",
    )
    .fetch_all(pool)
    .await?
    {
        match state.as_str() {
            "done" => restored.archived.done = count as u64,
            _ => restored.archived.failed += count as u64,
        }
    }
    for (id, doc) in sqlx::query_as::<_, (i64, String)>("SELECT id, doc FROM jobs WHERE archive IS NULL ORDER BY id")
        .fetch_all(pool)
        .await?
    {
        let record = job_record(serde_json::from_str(&doc)?);
        let rows = sqlx::query_as::<_, (i64, String, bool)>(
            "SELECT task, hash, bytes IS NOT NULL FROM task_results WHERE job = ?",
        )
        .bind(id)
        .fetch_all(pool)
        .await?;
        let mut results = Vec::with_capacity(rows.len());
        for (task, hash, inline) in rows {
            if inline {
                restored.inline_results.insert(hash.clone());
            }
            results.push((task as u64, hash));
        }
        restored.jobs.push((record, results));
    }
    Ok(())
}

impl Store {
    /// A pool for reads (history); writes go through [`Store::commit`].
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }
}

/// The writer task: commits records in batches until every sender is gone.
/// The chain and chain transaction id of the deposit credited by ledger transfer `id` (`wallet history` names it).
pub async fn deposit_tx(
    pool: &SqlitePool,
    id: neurolov_ledger::TransferId,
) -> anyhow::Result<Option<(neurolov_protocol::chain::Chain, String)>> {
    let row = sqlx::query_as::<_, (String,)>("SELECT doc FROM deposits WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    match row {
        Some((doc,)) => {
            let d: docs::DepositDoc = serde_json::from_str(&doc)?;
            Ok(Some((d.chain, d.tx_id)))
        }
        None => Ok(None),
    }
}

/// Spends a Telegram sign-in durably: false when `hash` signed in before (a replay, even across a restart). Entries
/// older than `forget_before_s` (too old to be accepted anyway) are dropped on the way.
pub async fn spend_sign_in(
    pool: &SqlitePool,
    hash: &str,
    auth_date: u64,
    forget_before_s: u64,
) -> anyhow::Result<bool> {
    let forget = i64::try_from(forget_before_s).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM telegram_sign_ins WHERE auth_date < ?").bind(forget).execute(pool).await?;
    let inserted =
        sqlx::query("INSERT INTO telegram_sign_ins (hash, auth_date) VALUES (?, ?) ON CONFLICT(hash) DO NOTHING")
            .bind(hash)
            .bind(i64::try_from(auth_date).unwrap_or(i64::MAX))
            .execute(pool)
            .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The newest custody transaction `chain`'s adapter has looked at for deposits (None: none yet).
pub async fn chain_cursor(pool: &SqlitePool, chain: neurolov_protocol::chain::Chain) -> anyhow::Result<Option<String>> {
    let row = sqlx::query_as::<_, (String,)>("SELECT cursor FROM chain_cursors WHERE chain = ?")
        .bind(chain.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(c,)| c))
}

/// Records that every custody transaction on `chain` up to `cursor` has been looked at. Only after the deposits
/// among them are durable: a crash before this write makes the restart look at them again (crediting is idempotent).
pub async fn set_chain_cursor(
    pool: &SqlitePool,
    chain: neurolov_protocol::chain::Chain,
    cursor: &str,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO chain_cursors (chain, cursor) VALUES (?, ?) ON CONFLICT(chain) DO UPDATE SET cursor = excluded.cursor")
        .bind(chain.as_str())
        .bind(cursor)
        .execute(pool)
        .await?;
    Ok(())
}

/// The newest `limit` deposits credited (to `account`, or to anyone), newest first.
pub async fn recent_deposits(
    pool: &SqlitePool,
    account: Option<&neurolov_protocol::Id>,
    limit: u32,
) -> anyhow::Result<Vec<neurolov_api::DepositView>> {
    let rows = match account {
        Some(a) => {
            sqlx::query_as::<_, (String,)>("SELECT doc FROM deposits WHERE account = ? ORDER BY rowid DESC LIMIT ?")
                .bind(a.to_string())
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }
        None => {
            sqlx::query_as::<_, (String,)>("SELECT doc FROM deposits ORDER BY rowid DESC LIMIT ?")
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }
    };
    rows.into_iter()
        .map(|(doc,)| {
            let d: docs::DepositDoc = serde_json::from_str(&doc)?;
            Ok(neurolov_api::DepositView {
                id: d.id,
                account: d.account.to_string(),
                chain: d.chain.to_string(),
                tx_id: d.tx_id,
                amount_nano: d.amount_nano,
                credited_ms: d.credited_ms,
            })
        })
        .collect()
}

pub async fn writer(mut store: Store, mut rx: mpsc::UnboundedReceiver<StoreMsg>) {
    loop {
        // Commits nobody waits on reach the disk within MAX_UNSYNCED_MS even when nothing else comes.
        let first = match store.unsynced_since {
            Some(since) => match tokio::time::timeout_at((since + MAX_UNSYNCED).into(), rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => StoreMsg::Records(Vec::new()),
            },
            None => match rx.recv().await {
                Some(m) => m,
                None => break,
            },
        };
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
        let mut docs = Vec::new();
        for m in batch {
            match m {
                StoreMsg::Records(r) => records.extend(r),
                StoreMsg::Flush(tx) => flushes.push(tx),
                StoreMsg::ExpireResults(before_ms, tx) => expiries.push((before_ms, tx)),
                StoreMsg::Doc { table, key, doc, done } => docs.push((table, key, doc, done)),
            }
        }
        for (table, key, doc, done) in docs {
            let write = sqlx::query(table.upsert()).bind(&key).bind(&doc).execute(&mut store.conn).await;
            if let Err(e) = write {
                tracing::error!(error = %e, "storage write failed; stopping");
                std::process::exit(70);
            }
            store.unsynced_since.get_or_insert_with(std::time::Instant::now);
            flushes.push(done);
        }
        let started = std::time::Instant::now();
        // Someone waits on these records (a job's client, a transfer's sender), or soon will (a job ended: its
        // client is told once it is on disk): they, and every commit before them, go to disk now. Otherwise the
        // fsync waits for the next such commit, at most MAX_UNSYNCED.
        let job_ended = records.iter().any(|r| matches!(r, Record::Job(j) if j.finished_ms.is_some()));
        let durable = job_ended
            || !flushes.is_empty()
            || !expiries.is_empty()
            || store.unsynced_since.is_some_and(|since| since.elapsed() >= MAX_UNSYNCED);
        if let Err(e) = store.commit_with(&records, durable).await {
            // Losing durability silently would be worse than stopping: the coordinator cannot go on.
            tracing::error!(error = %e, "storage write failed; stopping");
            std::process::exit(70);
        }
        tracing::debug!(
            records = records.len(),
            flushes = flushes.len(),
            durable,
            commit_us = started.elapsed().as_micros() as u64,
            "committed"
        );
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
    if let Err(e) = store.commit_with(&[], true).await {
        tracing::error!(error = %e, "last storage sync failed");
    }
}

impl Store {
    /// Commits `records` in one transaction, on disk when this returns.
    pub async fn commit(&mut self, records: &[Record]) -> anyhow::Result<()> {
        self.commit_with(records, true).await
    }

    /// Commits `records` in one transaction. `durable`: this commit and every earlier one are on disk when this
    /// returns (the WAL is fsynced, which covers the frames of earlier commits too); otherwise they survive the
    /// process being killed and reach the disk with the next durable commit.
    pub async fn commit_with(&mut self, records: &[Record], durable: bool) -> anyhow::Result<()> {
        if !records.is_empty() {
            let (fresh, next_seq) = commit(&mut self.conn, &self.nums, self.next_seq, records).await?;
            self.nums.extend(fresh);
            self.next_seq = next_seq;
            self.unsynced_since.get_or_insert_with(std::time::Instant::now);
        }
        if durable && self.unsynced_since.is_some() {
            let wal = self.wal.clone();
            tokio::task::spawn_blocking(move || std::fs::File::open(&wal)?.sync_data())
                .await?
                .map_err(|e| anyhow::anyhow!("syncing {}: {e}", self.wal.display()))?;
            self.unsynced_since = None;
        }
        Ok(())
    }
}

/// The statements of one commit with their arguments, handed to SQLite a few dozen at a time, transaction and all.
/// Run one at a time, each statement cost a round trip to sqlx's worker thread (40–80 µs here): most of a small
/// commit, and with a sync job's two commits a third of its latency (`scripts/bench-e2e`). Not all in one call
/// either: SQLite copies the rest of a call's text for every statement it prepares from it.
pub(super) struct Statements {
    /// Calls full up to [`MAX_STATEMENTS_PER_CALL`], in order.
    full: Vec<sqlx::QueryBuilder<sqlx::Sqlite>>,
    current: sqlx::QueryBuilder<sqlx::Sqlite>,
    /// Statements in `current`.
    in_current: usize,
}

/// Statements per call to SQLite (see [`Statements`]).
const MAX_STATEMENTS_PER_CALL: usize = 32;

impl Statements {
    /// A transaction's statements, starting with its `BEGIN`.
    fn begin() -> Statements {
        Statements { full: Vec::new(), current: sqlx::QueryBuilder::new("BEGIN IMMEDIATE;\n"), in_current: 1 }
    }

    /// Where the next statement goes.
    pub(super) fn next(&mut self) -> &mut sqlx::QueryBuilder<sqlx::Sqlite> {
        if self.in_current >= MAX_STATEMENTS_PER_CALL {
            let full = std::mem::replace(&mut self.current, sqlx::QueryBuilder::new(""));
            self.full.push(full);
            self.in_current = 0;
        }
        self.in_current += 1;
        &mut self.current
    }

    /// Runs the statements, then `COMMIT`; on an error the transaction is rolled back, so the connection can be used
    /// again.
    async fn commit(mut self, conn: &mut sqlx::SqliteConnection) -> anyhow::Result<()> {
        self.next().push("COMMIT;");
        for mut call in self.full.into_iter().chain([self.current]) {
            // Not kept in the prepared-statement cache: each commit's text is its own.
            if let Err(e) = call.build().persistent(false).execute(&mut *conn).await {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(e.into());
            }
        }
        Ok(())
    }
}

/// Appends one statement to `q`: `sql` with each `?` bound to the next value. A `?` without its value would shift
/// every later value of the call onto the wrong column: counted in every build.
macro_rules! statement {
    ($q:expr, $sql:expr $(, $value:expr)* $(,)?) => {{
        let q: &mut sqlx::QueryBuilder<sqlx::Sqlite> = $q.next();
        let mut parts = $sql.split('?');
        q.push(parts.next().unwrap_or_default());
        $(
            q.push_bind($value);
            q.push(parts.next().unwrap_or_default());
        )*
        assert!(parts.next().is_none(), "more placeholders than values in {}", $sql);
        q.push(";\n");
    }};
}

/// Writes `records` in one transaction on the writer's connection: the account numbers it gave new accounts, and
/// the next transfer position.
async fn commit(
    conn: &mut sqlx::SqliteConnection,
    nums: &HashMap<AccountId, i64>,
    next_seq: i64,
    records: &[Record],
) -> anyhow::Result<(HashMap<AccountId, i64>, i64)> {
    let mut q = Statements::begin();
    // A node's or a job's document is written whole, so only its last version in the batch (or the node's removal)
    // needs writing: a batch of verified results held one per result, each parsed and written for nothing. The id
    // counters only grow: their largest values, once.
    let mut last_node = HashMap::new();
    let mut last_job = HashMap::new();
    let (mut last_ids, mut ids) = (None, (0, 0));
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Node(n) => last_node.insert(n.id, i),
            Record::NodeForgotten { id } => last_node.insert(*id, i),
            Record::Job(j) => last_job.insert(j.id, i),
            Record::Ids { next_job, next_task } => {
                (last_ids, ids) = (Some(i), (ids.0.max(*next_job), ids.1.max(*next_task)));
                None
            }
            _ => None,
        };
    }
    let mut results = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Node(n) if last_node.get(&n.id) != Some(&i) => continue,
            Record::Job(j) if last_job.get(&j.id) != Some(&i) => continue,
            Record::Ids { .. } if last_ids != Some(i) => continue,
            // Task results in a row become one multi-row statement.
            Record::TaskResult { job, task, result_hash, inline } => {
                results.push((*task, *job, result_hash, inline));
                continue;
            }
            Record::Ledger(_) => continue,
            _ => {}
        }
        write_task_results(&mut q, &mut results);
        match r {
            Record::Ids { .. } => write_record(&mut q, &Record::Ids { next_job: ids.0, next_task: ids.1 })?,
            _ => write_record(&mut q, r)?,
        }
    }
    write_task_results(&mut q, &mut results);
    let ledger: Vec<&Changes> =
        records.iter().filter_map(|r| if let Record::Ledger(c) = r { Some(&**c) } else { None }).collect();
    let written = write_ledger(&mut q, nums, next_seq, &ledger)?;
    q.commit(conn).await?;
    Ok(written)
}

/// Task results per multi-row INSERT (4 parameters each, well under SQLite's 32,766).
const TASK_RESULTS_PER_STATEMENT: usize = 4_000;

/// A run of task results (task, job, hash, bytes kept inline), in order, as multi-row statements; `results` is left
/// empty.
#[allow(clippy::type_complexity)]
fn write_task_results(q: &mut Statements, results: &mut Vec<(u64, u64, &String, &Option<std::sync::Arc<[u8]>>)>) {
    for chunk in results.chunks(TASK_RESULTS_PER_STATEMENT) {
        let q = q.next();
        q.push("INSERT OR REPLACE INTO task_results (task, job, hash, bytes) ");
        q.push_values(chunk, |mut row, (task, job, hash, inline)| {
            row.push_bind(*task as i64)
                .push_bind(*job as i64)
                .push_bind((*hash).clone())
                .push_bind(inline.as_deref().map(<[u8]>::to_vec));
        });
        q.push(";\n");
    }
    results.clear();
}

/// One record's rows (all but the ledger's, which `write_ledger` writes for the whole event).
fn write_record(q: &mut Statements, r: &Record) -> anyhow::Result<()> {
    match r {
        Record::Node(n) => {
            let doc = serde_json::to_string(&node_doc(n))?;
            let sql = "INSERT INTO nodes (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc";
            statement!(q, sql, n.id.to_string(), doc);
        }
        Record::Job(j) => {
            let doc = serde_json::to_string(&job_doc(j))?;
            let sql = "INSERT INTO jobs (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc";
            statement!(q, sql, j.id as i64, doc);
        }
        Record::TaskResult { job, task, result_hash, inline } => {
            write_task_results(q, &mut vec![(*task, *job, result_hash, inline)]);
        }
        // The ledger's changes are written together after the event's other records (`write_ledger`).
        Record::Ledger(_) => {}
        Record::NodeForgotten { id } => statement!(q, "DELETE FROM nodes WHERE id = ?", id.to_string()),
        Record::JobArchived { job, tasks } => {
            let archive: Vec<ArchivedTaskDoc> = tasks
                .iter()
                .map(|t| ArchivedTaskDoc { task: t.task, node: t.node, verified: t.verified, attempts: t.attempts })
                .collect();
            statement!(q, "UPDATE jobs SET archive = ? WHERE id = ?", serde_json::to_string(&archive)?, *job as i64);
        }
        Record::TaskResultRevoked { job, task } => {
            statement!(q, "DELETE FROM task_results WHERE task = ? AND job = ?", *task as i64, *job as i64);
        }
        Record::Evidence(e) => {
            statement!(q, "INSERT INTO evidence (doc) VALUES (?)", serde_json::to_string(&evidence_doc(e))?);
        }
        Record::Withdrawal(w) => {
            let sql = "INSERT INTO withdrawals (id, account, doc) VALUES (?, ?, ?) \
                       ON CONFLICT(id) DO UPDATE SET doc = excluded.doc";
            statement!(q, sql, w.id.to_string(), w.account.to_string(), serde_json::to_string(&withdrawal_doc(w))?);
        }
        Record::Proposal(p) => {
            let sql = "INSERT INTO proposals (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc";
            statement!(q, sql, p.id as i64, serde_json::to_string(p.as_ref())?);
        }
        Record::Deposit(d) => {
            let sql = "INSERT INTO deposits (id, account, doc) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING";
            statement!(q, sql, d.id.to_string(), d.account.to_string(), serde_json::to_string(&deposit_doc(d))?);
        }
        Record::Ids { next_job, next_task } => {
            let sql = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)";
            for (key, value) in [("next_job", *next_job), ("next_task", *next_task)] {
                statement!(q, sql, key, value as i64);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use neurolov_ledger::{Bucket, Kind, Ledger, Transfer, TransferId, account_flags, codes};

    use super::*;

    /// A commit nobody waits on is left for the next durable one to force to disk (a durable call with nothing to
    /// write still syncs what waits), and a failed commit leaves nothing of itself and the connection usable.
    #[tokio::test]
    async fn deferred_commits_reach_the_disk_with_the_next_durable_one_and_failed_ones_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("neurolov-store-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coordinator.db");
        let (mut store, _) = open(&path).await.unwrap();
        assert!(store.wal.exists(), "{}", store.wal.display());
        store.commit_with(&[Record::Ids { next_job: 5, next_task: 7 }], false).await.unwrap();
        assert!(store.unsynced_since.is_some());
        store.commit_with(&[], true).await.unwrap();
        assert!(store.unsynced_since.is_none());
        // A commit whose second statement fails (its table is gone) leaves its first undone.
        sqlx::query("ALTER TABLE nodes RENAME TO nodes_away").execute(&store.pool).await.unwrap();
        let gone = neurolov_protocol::Keypair::from_seed([4; 32]).id();
        let failing = [Record::Ids { next_job: 9, next_task: 9 }, Record::NodeForgotten { id: gone }];
        assert!(store.commit_with(&failing, true).await.is_err());
        sqlx::query("ALTER TABLE nodes_away RENAME TO nodes").execute(&store.pool).await.unwrap();
        store.commit_with(&[Record::Ids { next_job: 6, next_task: 8 }], true).await.unwrap();
        store.pool.close().await;
        drop(store);
        let (_, restored) = open(&path).await.unwrap();
        assert_eq!((restored.next_job, restored.next_task), (6, 8));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch's records keep their order through the grouping: a result revoked after it was recorded is gone, one
    /// recorded after stays, across more statements than one call to SQLite takes; the id counters keep their
    /// largest values.
    #[tokio::test]
    async fn grouped_records_keep_their_order_across_calls() {
        let dir = std::env::temp_dir().join(format!("neurolov-store-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("coordinator.db");
        let (mut store, _) = open(&path).await.unwrap();
        let result = |task: u64| Record::TaskResult {
            job: 1,
            task,
            result_hash: format!("h{task}"),
            inline: Some(std::sync::Arc::from(&task.to_le_bytes()[..])),
        };
        let mut records = vec![Record::Ids { next_job: 3, next_task: 4 }];
        for task in 0..100 {
            records.push(result(task));
            if task % 2 == 0 {
                records.push(Record::TaskResultRevoked { job: 1, task });
            }
        }
        records.push(Record::Ids { next_job: 2, next_task: 9 });
        assert!(records.len() > 2 * MAX_STATEMENTS_PER_CALL);
        store.commit(&records).await.unwrap();
        let kept = inline_results(&store.pool, 1).await.unwrap();
        let mut tasks: Vec<u64> = kept.keys().map(|h| h[1..].parse().unwrap()).collect();
        tasks.sort_unstable();
        assert_eq!(tasks, (0..100).filter(|t| t % 2 == 1).collect::<Vec<_>>());
        store.pool.close().await;
        drop(store);
        let (_, restored) = open(&path).await.unwrap();
        assert_eq!((restored.next_job, restored.next_task), (3, 9));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
