//! `neurolov ledger audit`: recomputes every balance from the stored transfer log and checks it against the stored
//! accounts, the total supply, non-negative balances, each transfer id applied once, and escrow consistency (a
//! finished job's escrow is empty, a running job's escrow covers its open reservations).

use std::path::Path;

use neurolov_core::{JobState, escrow, rebuild_ledger};
use neurolov_ledger::{Kind, TOTAL_SUPPLY_NANO};

/// What the audit found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AuditReport {
    pub audit_ok: bool,
    pub accounts: usize,
    pub transfers: usize,
    pub total_supply_nano: u64,
    pub escrow_nano: u64,
    pub staked_nano: u64,
    pub treasury_nano: u64,
    pub jobs_checked: usize,
    /// Each chain as the ledger sees it (what its custody must hold: the chain's supply less `outside_nano`); the
    /// CLI holds these against the chains themselves when given their endpoints.
    pub chains: Vec<neurolov_api::ChainView>,
    pub problems: Vec<String>,
}

/// Audits the database in `data_dir` (it may be in use by a running coordinator: SQLite's WAL gives a consistent
/// snapshot).
pub async fn audit(data_dir: &Path) -> anyhow::Result<AuditReport> {
    let path = data_dir.join("coordinator.db");
    if !path.exists() {
        anyhow::bail!("no coordinator database at {}", path.display());
    }
    let (_store, restored) = crate::store::open(&path).await?;
    let mut report = AuditReport {
        accounts: restored.ledger_accounts.len(),
        transfers: restored.ledger_transfers.len(),
        ..AuditReport::default()
    };
    let ledger = match rebuild_ledger(&restored.ledger_accounts, restored.ledger_transfers) {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
    };
    let sum = |kind: Kind| ledger.accounts().filter(|a| a.kind == kind).map(|a| a.balance()).sum::<i128>();
    let circulating = ledger.circulating();
    report.total_supply_nano = u64::try_from(circulating).unwrap_or(0);
    report.escrow_nano = u64::try_from(sum(Kind::Escrow)).unwrap_or(0);
    report.staked_nano = u64::try_from(sum(Kind::Stake)).unwrap_or(0);
    report.treasury_nano =
        u64::try_from(ledger.account(neurolov_core::treasury()).map_or(0, |a| a.balance())).unwrap_or(0);
    if circulating != i128::from(TOTAL_SUPPLY_NANO) {
        report.problems.push(format!("total supply is {circulating}, not {TOTAL_SUPPLY_NANO}"));
    }
    for a in ledger.accounts() {
        if a.kind != Kind::Mint && a.balance() < 0 {
            report.problems.push(format!("account {} ({}) is negative", a.id, a.owner));
        }
    }
    for (job, _) in &restored.jobs {
        report.jobs_checked += 1;
        let Some(e) = ledger.account(escrow(job.id)) else { continue };
        let finished = !matches!(job.state, JobState::Running { .. });
        if finished && (e.balance() != 0 || e.debits_pending != 0) {
            report.problems.push(format!(
                "job {} has ended but its escrow holds {} ({} reserved)",
                job.id,
                e.balance(),
                e.debits_pending
            ));
        }
    }
    report.chains = neurolov_protocol::chain::Chain::ALL
        .into_iter()
        .map(|chain| {
            let outside = ledger.account(neurolov_core::outside(chain)).map_or(0, |a| a.balance());
            let sum = |signed: bool| {
                restored
                    .withdrawals
                    .iter()
                    .filter(|w| w.chain == chain && !w.state.is_finished())
                    .filter(|w| matches!(w.state, neurolov_core::WithdrawalState::Signed { .. }) == signed)
                    .map(|w| w.amount_nano)
                    .sum()
            };
            neurolov_api::ChainView {
                chain: chain.to_string(),
                outside_nano: u64::try_from(outside).unwrap_or(0),
                requested_nano: sum(false),
                in_flight_nano: sum(true),
                deposit_address: None,
            }
        })
        .collect();
    report.audit_ok = report.problems.is_empty();
    Ok(report)
}
