//! Jobs the core no longer holds: read back on request (status, result, idempotency key), their results forgotten
//! after the retention, and the blobs the database names (the collector keeps them).

use std::collections::HashMap;

use neurolov_core::{JobState, JobView, TaskView};
use neurolov_protocol::Id;
use sqlx::sqlite::SqlitePool;

use super::docs::{ArchivedTaskDoc, EvidenceDoc, job_record};

/// Adds what archiving jobs needs to a database from before it: the `archive` column (NULL while the job is in
/// the core's memory) and an index to find a job by its client's idempotency key.
pub(super) async fn migrate_jobs(pool: &SqlitePool) -> anyhow::Result<()> {
    let columns: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('jobs')").fetch_all(pool).await?;
    if !columns.iter().any(|(c,)| c == "archive") {
        sqlx::query("ALTER TABLE jobs ADD COLUMN archive TEXT").execute(pool).await?;
    }
    // Small results live in their row (protocol version 2 delivers them inside frames, never as blob files).
    let columns: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM pragma_table_info('task_results')").fetch_all(pool).await?;
    if !columns.iter().any(|(c,)| c == "bytes") {
        sqlx::query("ALTER TABLE task_results ADD COLUMN bytes BLOB").execute(pool).await?;
    }
    // A job's results are read by job (its result, its restore): without this each read scanned every result.
    sqlx::query("CREATE INDEX IF NOT EXISTS task_results_by_job ON task_results (job)").execute(pool).await?;
    sqlx::query(
        "CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (json_extract(doc, '$.client'), \
         json_extract(doc, '$.idempotency_key')) WHERE json_extract(doc, '$.idempotency_key') IS NOT NULL",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The results of `job` kept in the database rather than as blob files, by hash.
pub async fn inline_results(pool: &SqlitePool, job: u64) -> anyhow::Result<HashMap<String, std::sync::Arc<[u8]>>> {
    let rows = sqlx::query_as::<_, (String, Vec<u8>)>(
        "SELECT hash, bytes FROM task_results WHERE job = ? AND bytes IS NOT NULL",
    )
    .bind(job as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(hash, bytes)| (hash, bytes.into())).collect())
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
        let e = super::docs::evidence(serde_json::from_str::<EvidenceDoc>(&doc)?);
        neurolov_core::evidence_blobs(&e, &mut blobs);
    }
    Ok(blobs)
}

/// Deletes the task results of archived jobs that finished before `before_ms`; returns how many went.
pub(super) async fn expire_results(pool: &SqlitePool, before_ms: u64) -> anyhow::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM task_results WHERE job IN (SELECT id FROM jobs WHERE archive IS NOT NULL \
         AND json_extract(doc, '$.finished_ms') < ?)",
    )
    .bind(i64::try_from(before_ms).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
