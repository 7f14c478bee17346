//! The chain adapters' loop (issue 14): what moves a withdrawal forward on its chain. The core holds the NLOV and
//! the withdrawal's state (`neurolov_core::custody`); this loop only ever does, for Solana:
//! - a `Signed` withdrawal: ask the cluster for its signature first. Finalized: confirm (the hold is posted). Landed
//!   with an error: it can never succeed under that signature, so fail it (the hold is voided, the account
//!   refunded). Unknown while its blockhash can still land: send the *same* bytes again. Unknown once the finalized
//!   block height has passed its last valid height: it can never land, so fail it.
//! - a `Requested` withdrawal: sign it and record the signed transaction durably, and only then send it.
//!
//! So a withdrawal is never signed twice, and after a crash at any point the restarted coordinator's first round
//! finds out what became of what it signed before it does anything else.

use std::sync::Arc;
use std::time::Duration;

use neurolov_chain::rpc::{Client, MAX_SIGNATURES_PER_CALL, RpcError, SignatureStatus};
use neurolov_chain::solana::{self, Keypair, Pubkey};
use neurolov_core::{Withdrawal, WithdrawalState};
use neurolov_protocol::chain::Chain;
use solana_signer::Signer as _;

use crate::{Coordinator, now_ms};

/// Withdrawals signed per round: a burst of requests is worked off over several rounds.
pub const MAX_SIGNED_PER_ROUND: usize = 64;

/// How the coordinator keeps custody on Solana.
#[derive(Clone)]
pub struct SolanaCustody {
    /// The JSON-RPC endpoint.
    pub rpc_url: String,
    /// NLOV's SPL mint.
    pub mint: Pubkey,
    /// The custody's keypair: it owns the buckets' token accounts and pays withdrawals (never logged).
    pub custody: Arc<Keypair>,
    /// Priority fee, micro-lamports per compute unit.
    pub priority_micro_lamports: u64,
    /// How often a round runs.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for SolanaCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolanaCustody")
            .field("rpc_url", &self.rpc_url)
            .field("mint", &self.mint)
            .finish_non_exhaustive()
    }
}

/// Test hooks: `NEUROLOV_CRASH_AFTER_SIGNING=1` ends the process right after a signed withdrawal is durable and
/// before it is sent, `NEUROLOV_CRASH_AFTER_SENDING=1` right after it was sent and before it is confirmed — the
/// crashes the design must survive, made exact for the crash tests.
pub(crate) fn crash_point(variable: &str) -> bool {
    std::env::var(variable).as_deref() == Ok("1")
}

/// Runs rounds until the process ends.
pub(crate) async fn run_solana(coordinator: Arc<Coordinator>, custody: SolanaCustody) {
    let client = match Client::new(&custody.rpc_url) {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "solana custody disabled"),
    };
    tracing::info!(rpc = %custody.rpc_url, mint = %custody.mint, "solana custody running");
    // The newest custody transaction already looked at for deposits, kept across restarts (written only once what
    // it covers is durable; crediting is idempotent by transaction id, so looking twice is harmless).
    let mut seen: Option<String> = match crate::store::chain_cursor(&coordinator.db, Chain::Solana).await {
        Ok(cursor) => cursor,
        Err(e) => return tracing::error!(error = %e, "reading the solana deposit cursor failed; custody disabled"),
    };
    loop {
        if let Err(e) = round(&coordinator, &client, &custody).await {
            tracing::warn!(error = %e, "solana round failed; retrying");
        }
        match deposits(&coordinator, &client, &custody, seen.as_deref()).await {
            Ok(Some(newest)) if seen.as_deref() != Some(newest.as_str()) => {
                match crate::store::set_chain_cursor(&coordinator.db, Chain::Solana, &newest).await {
                    Ok(()) => seen = Some(newest),
                    Err(e) => tracing::warn!(error = %e, "recording the solana deposit cursor failed; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for solana deposits failed; retrying"),
        }
        tokio::time::sleep(custody.poll_interval).await;
    }
}

/// Credits the deposits that landed in the custody's account since `seen`, oldest first: a transfer of NLOV into
/// it whose memo names a Neurolov account. Returns the newest signature looked at.
pub(crate) async fn deposits(
    coordinator: &Coordinator,
    client: &Client,
    custody: &SolanaCustody,
    seen: Option<&str>,
) -> Result<Option<String>, RpcError> {
    let account = solana::associated_account(&custody.custody.pubkey(), &custody.mint);
    let signatures = since(client, &account, seen).await?;
    let mut credited_any = false;
    for signature in signatures.iter().rev() {
        let Some(fetched) = client.transaction(signature).await? else { continue };
        if fetched.err.is_some() {
            continue;
        }
        let Some((amount_nano, memo)) = solana::deposit_of(&fetched.tx, &fetched.changes, &account, &custody.mint)
        else {
            continue;
        };
        let Some(to) = memo.as_deref().and_then(|m| m.parse::<neurolov_protocol::Id>().ok()) else {
            tracing::warn!(%signature, amount_nano, ?memo, "a deposit whose memo names no account: not credited");
            continue;
        };
        let credited =
            coordinator.with_core(|core, _| match core.deposit(now_ms(), Chain::Solana, signature, to, amount_nano) {
                Ok((outcome, effects)) => (Ok(outcome), effects),
                Err(e) => (Err(e), Vec::new()),
            });
        match credited {
            Ok(neurolov_ledger::Outcome::Applied) => {
                credited_any = true;
                tracing::info!(%signature, account = %to, amount_nano, "deposit credited");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(%signature, account = %to, amount_nano, error = %e, "a deposit the ledger refuses")
            }
        }
    }
    // A round that credited nothing has nothing to make durable: no fsync every poll on an idle custody.
    if credited_any {
        coordinator.flush().await;
    }
    Ok(signatures.first().cloned())
}

/// Pages of custody signatures looked at for deposits in one round, newest first back to the cursor.
pub const MAX_DEPOSIT_PAGES: usize = 20;

/// The custody account's signatures after `seen`, newest first, paging back (up to [`MAX_DEPOSIT_PAGES`]).
async fn since(client: &Client, account: &Pubkey, seen: Option<&str>) -> Result<Vec<String>, RpcError> {
    let mut signatures: Vec<String> = Vec::new();
    for page_number in 0..MAX_DEPOSIT_PAGES {
        let page = client.signatures_for_address(account, seen, signatures.last().map(String::as_str)).await?;
        let full = page.len() >= neurolov_chain::rpc::MAX_SIGNATURES_PER_PAGE;
        signatures.extend(page);
        if !full {
            break;
        }
        if page_number + 1 == MAX_DEPOSIT_PAGES {
            tracing::error!(
                pages = MAX_DEPOSIT_PAGES,
                "more custody transactions than one round reads: the oldest are skipped"
            );
        }
    }
    Ok(signatures)
}

/// One pass over the open Solana withdrawals.
pub(crate) async fn round(coordinator: &Coordinator, client: &Client, custody: &SolanaCustody) -> Result<(), RpcError> {
    let open: Vec<Withdrawal> =
        coordinator.read_core(|c| c.open_withdrawals()).into_iter().filter(|w| w.chain == Chain::Solana).collect();
    let (signed, requested): (Vec<Withdrawal>, Vec<Withdrawal>) =
        open.into_iter().partition(|w| matches!(w.state, WithdrawalState::Signed { .. }));
    for batch in signed.chunks(MAX_SIGNATURES_PER_CALL) {
        settle_signed(coordinator, client, batch).await?;
    }
    if requested.is_empty() {
        return Ok(());
    }
    let blockhash = client.latest_blockhash().await?;
    for w in requested.iter().take(MAX_SIGNED_PER_ROUND) {
        let to = match solana::parse_address(&w.to) {
            Ok(to) => to,
            Err(e) => {
                settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, &e.to_string()));
                continue;
            }
        };
        #[allow(clippy::clone_on_copy)] // `Hash` is `Copy` only under some features.
        let hash = blockhash.hash.clone();
        let tx = match solana::withdrawal(
            &custody.custody,
            &custody.mint,
            &to,
            w.amount_nano,
            custody.priority_micro_lamports,
            hash,
        ) {
            Ok(tx) => tx,
            Err(e) => {
                settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, &e.to_string()));
                continue;
            }
        };
        let (signature, wire) = (solana::signature(&tx), solana::wire(&tx));
        let recorded = coordinator.with_core(|core, _| {
            match core.withdrawal_signed(now_ms(), w.id, &signature, wire, blockhash.last_valid_block_height) {
                Ok(effects) => (true, effects),
                Err(e) => {
                    tracing::error!(withdrawal = %w.id, error = %e, "signed withdrawal not recorded; not sent");
                    (false, Vec::new())
                }
            }
        });
        if !recorded {
            continue;
        }
        // Durable before a byte leaves: after a crash from here on, the restarted coordinator finds this signature.
        coordinator.flush().await;
        if crash_point("NEUROLOV_CRASH_AFTER_SIGNING") {
            tracing::warn!(withdrawal = %w.id, "NEUROLOV_CRASH_AFTER_SIGNING: exiting before the send");
            std::process::exit(86);
        }
        tracing::info!(withdrawal = %w.id, %signature, to = %to, amount_nano = w.amount_nano, "withdrawal sent");
        if let Err(e) = client.send(&tx).await {
            // Sent again next round (same bytes) until it lands or expires.
            tracing::warn!(withdrawal = %w.id, error = %e, "sending failed");
        }
        if crash_point("NEUROLOV_CRASH_AFTER_SENDING") {
            tracing::warn!(withdrawal = %w.id, "NEUROLOV_CRASH_AFTER_SENDING: exiting before the confirmation");
            std::process::exit(87);
        }
    }
    Ok(())
}

/// Moves a withdrawal forward in the core; a refusal (it moved already: another round, a restart) is logged.
pub(crate) fn settle(
    coordinator: &Coordinator,
    f: impl FnOnce(&mut neurolov_core::Core) -> Result<Vec<neurolov_core::Effect>, neurolov_core::CustodyError>,
) {
    coordinator.with_core(|core, _| match f(core) {
        Ok(effects) => ((), effects),
        Err(e) => {
            tracing::warn!(error = %e, "withdrawal not moved");
            ((), Vec::new())
        }
    });
}

/// Decides each signed withdrawal of `batch` by what the cluster says of its signature.
async fn settle_signed(coordinator: &Coordinator, client: &Client, batch: &[Withdrawal]) -> Result<(), RpcError> {
    let signatures: Vec<String> = batch
        .iter()
        .filter_map(|w| match &w.state {
            WithdrawalState::Signed { tx_id, .. } => Some(tx_id.clone()),
            _ => None,
        })
        .collect();
    let statuses = client.signature_statuses(&signatures).await?;
    // Read after the statuses: a transaction unknown above and past its last valid height here cannot land later.
    let height = client.block_height().await?;
    for (w, status) in batch.iter().zip(statuses) {
        let WithdrawalState::Signed { signed_tx, expires, .. } = &w.state else { continue };
        let now = now_ms();
        match status {
            SignatureStatus::Landed { commitment } if commitment == "finalized" => {
                settle(coordinator, |core| core.withdrawal_confirmed(now, w.id));
            }
            SignatureStatus::Landed { .. } => {}
            SignatureStatus::Failed(err) => {
                let reason = format!("failed on chain: {err}");
                settle(coordinator, |core| core.withdrawal_failed(now, w.id, &reason));
            }
            SignatureStatus::Unknown if height > *expires => {
                let reason = "expired without landing";
                settle(coordinator, |core| core.withdrawal_failed(now, w.id, reason));
            }
            SignatureStatus::Unknown => match solana::from_wire(signed_tx) {
                Some(tx) => {
                    if let Err(e) = client.send(&tx).await {
                        tracing::warn!(withdrawal = %w.id, error = %e, "re-sending failed");
                    }
                }
                None => {
                    tracing::error!(withdrawal = %w.id, "a recorded transaction does not parse; left for the audit")
                }
            },
        }
    }
    coordinator.flush().await;
    Ok(())
}
