//! Ledger throughput committed durably into SQLite (WAL, synchronous=FULL), the way the coordinator does it: a
//! batch applied by the ledger, its changes committed in one transaction. Also the latency of committing one
//! transfer on its own. `cargo bench -p neurolov-coordinator --bench ledger` (NEUROLOV_BENCH_TRANSFERS sets the
//! total, default 1,000,000).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use neurolov_core::Record;
use neurolov_ledger::{AccountId, Bucket, Kind, Ledger, MAX_BATCH, Transfer, TransferId, account_flags, codes};

const ACCOUNTS: u128 = 10_000;

fn main() {
    let total: usize = std::env::var("NEUROLOV_BENCH_TRANSFERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("neurolov-ledger-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut store, _) = rt.block_on(neurolov_coordinator::store::open(&dir.join("coordinator.db"))).unwrap();
    let mut ledger = Ledger::with_genesis(0).unwrap();
    let fund = Bucket::EcosystemFund.account();
    let mut next = 1u128;
    let mut id = || {
        next += 1;
        TransferId(next)
    };
    let funding: Vec<Transfer> = (0..ACCOUNTS)
        .map(|i| {
            let a = AccountId(1_000 + i);
            ledger.create_account(a, Kind::User, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, "bench", 0).unwrap();
            Transfer::new(id(), fund, a, 1_000_000_000_000, codes::FAUCET)
        })
        .collect();
    for chunk in funding.chunks(MAX_BATCH) {
        assert!(ledger.submit(chunk, 0).iter().all(|r| r.is_ok()));
    }
    let changes = ledger.take_changes().unwrap();
    rt.block_on(store.commit(&[Record::Ledger(Box::new(changes))])).unwrap();

    // Ledger batches per SQLite transaction, as the coordinator's writer groups whatever is queued.
    let per_commit: usize =
        std::env::var("NEUROLOV_BENCH_BATCHES_PER_COMMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let mut pending: Vec<Record> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let started = Instant::now();
    let (mut applied, mut apply_s) = (0usize, 0.0f64);
    while applied < total {
        batch.clear();
        for _ in 0..MAX_BATCH.min(total - applied) {
            let (d, c) = (rng.u128(0..ACCOUNTS), rng.u128(0..ACCOUNTS));
            let c = if c == d { (c + 1) % ACCOUNTS } else { c };
            batch.push(Transfer::new(
                id(),
                AccountId(1_000 + d),
                AccountId(1_000 + c),
                rng.u64(1..1_000),
                codes::WALLET,
            ));
        }
        let t = Instant::now();
        let results = ledger.submit(&batch, 1);
        let changes = ledger.take_changes().unwrap();
        apply_s += t.elapsed().as_secs_f64();
        assert!(results.iter().all(|r| r.is_ok()));
        pending.push(Record::Ledger(Box::new(changes)));
        applied += batch.len();
        if pending.len() >= per_commit || applied >= total {
            rt.block_on(store.commit(&pending)).unwrap();
            pending.clear();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "batched: {applied} transfers in {secs:.2} s = {:.0} transfers/s committed durably (ledger alone: {:.0}/s)",
        applied as f64 / secs,
        applied as f64 / apply_s
    );

    let mut latencies = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let one = [Transfer::new(id(), AccountId(1_000), AccountId(1_001), 1, codes::WALLET)];
        assert!(ledger.submit(&one, 2)[0].is_ok());
        let changes = ledger.take_changes().unwrap();
        rt.block_on(store.commit(&[Record::Ledger(Box::new(changes))])).unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "single transfer commit: median {:.2} ms, p99 {:.2} ms",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
    ledger.check_full().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
