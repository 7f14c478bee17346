//! The ledger's tables: accounts with their totals (128-bit values as 16-byte big-endian blobs, each account with a
//! small number that transfers name it by), the transfer log in the order it was applied, and each account's
//! history as a clustered `(account, seq)` table written in key order at every commit.

use std::collections::HashMap;

use neurolov_ledger::{Account, AccountId, Changes, Kind, Transfer, TransferId};
use sqlx::sqlite::SqlitePool;

pub(super) type AccountRow = (i64, Vec<u8>, i64, i64, String, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// Transfers per multi-row INSERT (11 parameters each, well under SQLite's 32,766).
pub(super) const TRANSFERS_PER_STATEMENT: usize = 2_000;

/// History entries per multi-row INSERT (2 parameters each).
pub(super) const HISTORY_PER_STATEMENT: usize = 10_000;

/// A database from before `ledger_history` kept the history in two indexes on the transfer log: they become the
/// history table, once.
pub(super) async fn migrate_history(pool: &SqlitePool) -> anyhow::Result<()> {
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

pub(super) fn u128_blob(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub(super) fn blob_u128(b: &[u8]) -> anyhow::Result<u128> {
    let bytes: [u8; 16] = b.try_into().map_err(|_| anyhow::anyhow!("a stored 128-bit value has {} bytes", b.len()))?;
    Ok(u128::from_be_bytes(bytes))
}

/// The ledger's accounts (with stored totals), its transfer log in order, and each account's number.
pub(super) async fn load_ledger(
    pool: &SqlitePool,
) -> anyhow::Result<(Vec<Account>, Vec<Transfer>, HashMap<AccountId, i64>)> {
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

pub(super) type TransferRow = (Vec<u8>, i64, i64, i64, Option<Vec<u8>>, i64, i64, i64, i64, i64);

pub(super) fn transfer_of(row: TransferRow, ids: &HashMap<i64, AccountId>) -> anyhow::Result<Transfer> {
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
pub(super) fn write_ledger(
    q: &mut super::Statements,
    nums: &HashMap<AccountId, i64>,
    next_seq: i64,
    changes: &[&Changes],
) -> anyhow::Result<(HashMap<AccountId, i64>, i64)> {
    let fresh = number_new_accounts(nums, changes);
    let num = |id: &AccountId| -> anyhow::Result<i64> {
        nums.get(id).or_else(|| fresh.get(id)).copied().ok_or_else(|| anyhow::anyhow!("account {id} has no number"))
    };
    let mut latest: HashMap<AccountId, &Account> = HashMap::new();
    for a in changes.iter().flat_map(|c| c.created.iter().chain(&c.accounts)) {
        latest.insert(a.id, a);
    }
    let accounts: Vec<(i64, &Account)> =
        latest.into_values().map(|a| Ok((num(&a.id)?, a))).collect::<anyhow::Result<_>>()?;
    write_accounts(q, &accounts);
    let rows: Vec<(i64, i64, i64, &Transfer)> = changes
        .iter()
        .flat_map(|c| &c.transfers)
        .zip(next_seq..)
        .map(|(t, seq)| Ok((seq, num(&t.debit)?, num(&t.credit)?, t)))
        .collect::<anyhow::Result<_>>()?;
    write_transfers(q, &rows);
    Ok((fresh, next_seq + rows.len() as i64))
}

/// Numbers for the accounts these changes create, after the highest in use.
fn number_new_accounts(nums: &HashMap<AccountId, i64>, changes: &[&Changes]) -> HashMap<AccountId, i64> {
    let mut next = nums.values().max().copied().unwrap_or(0);
    let mut fresh = HashMap::new();
    for a in changes.iter().flat_map(|c| &c.created) {
        if !nums.contains_key(&a.id) && !fresh.contains_key(&a.id) {
            next += 1;
            fresh.insert(a.id, next);
        }
    }
    fresh
}

/// Each touched account once, in its latest state (inserted, or its totals updated).
fn write_accounts(q: &mut super::Statements, accounts: &[(i64, &Account)]) {
    for chunk in accounts.chunks(TRANSFERS_PER_STATEMENT) {
        let q = q.next();
        q.push(
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
             credits_posted = excluded.credits_posted;\n",
        );
    }
}

/// The transfers in order as (seq, debit number, credit number, transfer), then both sides' history entries.
fn write_transfers(q: &mut super::Statements, rows: &[(i64, i64, i64, &Transfer)]) {
    for chunk in rows.chunks(TRANSFERS_PER_STATEMENT) {
        let q = q.next();
        q.push(
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
        q.push(";\n");
    }
    // In key order, the entries land in each account's last page one after another instead of all over the tree.
    let mut history: Vec<(i64, i64)> =
        rows.iter().flat_map(|&(seq, debit, credit, _)| [(debit, seq), (credit, seq)]).collect();
    history.sort_unstable();
    history.dedup();
    for chunk in history.chunks(HISTORY_PER_STATEMENT) {
        let q = q.next();
        q.push("INSERT INTO ledger_history (account, seq) ");
        q.push_values(chunk, |mut row, (account, seq)| {
            row.push_bind(*account).push_bind(*seq);
        });
        q.push(";\n");
    }
}
