//! The TON adapter's loop (issue 14): moves withdrawals to TON forward and credits deposits, the way `chains.rs` does
//! for Solana. A wallet's external messages are ordered by its seqno, so custody has at most one signed withdrawal on
//! TON at a time:
//! - a `Signed` withdrawal: read the chain's time, *then* the wallet's seqno. Seqno past the message's: it was
//!   accepted — find its transaction by body hash and what the custody's jetton wallet did with the transfer (sent
//!   on: confirm; refused and bounced: fail). Seqno still the message's and the chain's time past its `valid_until`:
//!   it can never be accepted (the time was read first), so fail it. Otherwise send the *same* bytes again.
//! - a `Requested` withdrawal (only when none is signed): sign it at the wallet's seqno, record it durably, and only
//!   then send it.
//!
//! Deposits are the custody wallet's transfer notifications from its own jetton wallet, credited once by transaction.

use std::sync::Arc;
use std::time::Duration;

use neurolov_chain::ton::{self, TonAddress, TonWallet};
use neurolov_chain::toncenter::{MAX_TRANSACTIONS_PER_PAGE, TonApiError, TonClient};
use neurolov_core::{Withdrawal, WithdrawalState};
use neurolov_protocol::chain::Chain;

use crate::chains::{crash_point, settle};
use crate::{Coordinator, now_ms};

/// Pages of the custody wallet's transactions searched for an accepted message (newest first).
pub const MAX_PAGES_SEARCHED: usize = 10;
/// Pages of custody transactions looked at for deposits in one round, newest first back to the cursor: a restart
/// after downtime catches up on up to this many pages at once.
pub const MAX_DEPOSIT_PAGES: usize = 100;

/// How the coordinator keeps custody on TON.
#[derive(Clone)]
pub struct TonCustody {
    /// The toncenter-style API's base (`…/api/v2`).
    pub api_url: String,
    /// NLOV's jetton master (minter).
    pub jetton_master: TonAddress,
    /// The custody's wallet (v4r2) and key (never logged: `TonWallet`'s `Debug` redacts it).
    pub custody: Arc<TonWallet>,
    /// How long a signed message stays valid, in seconds (its `valid_until` = chain time + this).
    pub message_ttl_s: u32,
    /// How often a round runs.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for TonCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TonCustody")
            .field("api_url", &self.api_url)
            .field("jetton_master", &self.jetton_master.to_hex())
            .field("custody", &self.custody.address.to_hex())
            .finish_non_exhaustive()
    }
}

/// Runs rounds until the process ends.
pub(crate) async fn run_ton(coordinator: Arc<Coordinator>, custody: TonCustody) {
    let client = match TonClient::new(&custody.api_url) {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "ton custody disabled"),
    };
    let jetton_wallet = loop {
        match client.jetton_wallet(&custody.jetton_master, &custody.custody.address).await {
            Ok(w) => break w,
            Err(e) => tracing::warn!(error = %e, "finding the custody's jetton wallet failed; retrying"),
        }
        tokio::time::sleep(custody.poll_interval).await;
    };
    tracing::info!(api = %custody.api_url, wallet = %custody.custody.address, jetton_wallet = %jetton_wallet,
        "ton custody running");
    // The newest custody transaction already looked at for deposits, kept across restarts (written only once what
    // it covers is durable; crediting is idempotent by transaction id, so looking twice is harmless).
    let mut seen_lt = match crate::store::chain_cursor(&coordinator.db, Chain::Ton).await {
        Ok(cursor) => cursor.and_then(|c| c.parse().ok()).unwrap_or(0),
        Err(e) => return tracing::error!(error = %e, "reading the ton deposit cursor failed; ton custody disabled"),
    };
    loop {
        if let Err(e) = round(&coordinator, &client, &custody, &jetton_wallet).await {
            tracing::warn!(error = %e, "ton round failed; retrying");
        }
        match deposits(&coordinator, &client, &custody.custody.address, &jetton_wallet, seen_lt).await {
            Ok(newest) if newest > seen_lt => {
                match crate::store::set_chain_cursor(&coordinator.db, Chain::Ton, &newest.to_string()).await {
                    Ok(()) => seen_lt = newest,
                    Err(e) => tracing::warn!(error = %e, "recording the ton deposit cursor failed; retrying"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for ton deposits failed; retrying"),
        }
        tokio::time::sleep(custody.poll_interval).await;
    }
}

/// Credits the deposits among the custody wallet's transactions after `seen_lt`, oldest first. Returns the newest
/// transaction's lt looked at.
async fn deposits(
    coordinator: &Coordinator,
    client: &TonClient,
    wallet: &TonAddress,
    jetton_wallet: &TonAddress,
    seen_lt: u64,
) -> Result<u64, TonApiError> {
    let txs = since(client, wallet, seen_lt).await?;
    let mut credited_any = false;
    for tx in txs.iter().rev() {
        let Some((amount_nano, comment)) = ton::deposit_of(tx, jetton_wallet) else { continue };
        let tx_id = tx.id();
        let Some(to) = comment.as_deref().and_then(|c| c.trim().parse::<neurolov_protocol::Id>().ok()) else {
            tracing::warn!(tx = %tx_id, amount_nano, ?comment, "a deposit whose comment names no account: not credited");
            continue;
        };
        let credited =
            coordinator.with_core(|core, _| match core.deposit(now_ms(), Chain::Ton, &tx_id, to, amount_nano) {
                Ok((outcome, effects)) => (Ok(outcome), effects),
                Err(e) => (Err(e), Vec::new()),
            });
        match credited {
            Ok(neurolov_ledger::Outcome::Applied) => {
                credited_any = true;
                tracing::info!(tx = %tx_id, account = %to, amount_nano, "ton deposit credited");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(tx = %tx_id, account = %to, amount_nano, error = %e, "a deposit the ledger refuses")
            }
        }
    }
    if credited_any {
        coordinator.flush().await;
    }
    Ok(txs.first().map_or(seen_lt, |tx| tx.lt))
}

/// `account`'s transactions after `seen_lt`, newest first, paging back (up to [`MAX_DEPOSIT_PAGES`]).
async fn since(
    client: &TonClient,
    account: &TonAddress,
    seen_lt: u64,
) -> Result<Vec<neurolov_chain::toncenter::TonTransaction>, TonApiError> {
    let mut txs = Vec::new();
    let mut cursor: Option<(u64, String)> = None;
    for page_number in 0..MAX_DEPOSIT_PAGES {
        let from = cursor.as_ref().map(|(lt, hash)| (*lt, hash.as_str()));
        let page = client.transactions(account, MAX_TRANSACTIONS_PER_PAGE, from, seen_lt).await?;
        let full = page.len() == MAX_TRANSACTIONS_PER_PAGE;
        let next = page.last().map(|tx| (tx.lt, tx.hash.clone()));
        // A page from a cursor starts with the cursor's own transaction.
        txs.extend(page.into_iter().skip(usize::from(cursor.is_some())));
        if !full {
            return Ok(txs);
        }
        if page_number + 1 == MAX_DEPOSIT_PAGES {
            tracing::error!(
                pages = MAX_DEPOSIT_PAGES,
                "more custody transactions than one round reads: the oldest are skipped"
            );
        }
        cursor = next;
    }
    Ok(txs)
}

/// One pass over the open TON withdrawals.
async fn round(
    coordinator: &Coordinator,
    client: &TonClient,
    custody: &TonCustody,
    jetton_wallet: &TonAddress,
) -> Result<(), TonApiError> {
    let open: Vec<Withdrawal> =
        coordinator.read_core(|c| c.open_withdrawals()).into_iter().filter(|w| w.chain == Chain::Ton).collect();
    let signed: Vec<&Withdrawal> = open.iter().filter(|w| matches!(w.state, WithdrawalState::Signed { .. })).collect();
    for w in &signed {
        settle_signed(coordinator, client, custody, jetton_wallet, w).await?;
    }
    if !signed.is_empty() {
        return Ok(()); // one message per seqno: the next is signed once this one is settled
    }
    match open.iter().find(|w| w.state == WithdrawalState::Requested) {
        Some(w) => sign_and_send(coordinator, client, custody, jetton_wallet, w).await,
        None => Ok(()),
    }
}

fn query_id(w: &Withdrawal) -> u64 {
    ton::query_id(&w.id.0.to_be_bytes())
}

async fn sign_and_send(
    coordinator: &Coordinator,
    client: &TonClient,
    custody: &TonCustody,
    jetton_wallet: &TonAddress,
    w: &Withdrawal,
) -> Result<(), TonApiError> {
    let to = match ton::parse_address(&w.to) {
        Ok(to) => to,
        Err(e) => {
            settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, &e.to_string()));
            return Ok(());
        }
    };
    if client.jetton_balance(jetton_wallet).await? < w.amount_nano {
        let reason = "the custody on TON holds less NLOV than this withdrawal";
        settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, reason));
        return Ok(());
    }
    let wallet = &custody.custody;
    let deployed = client.account_state(&wallet.address).await?.state == "active";
    let seqno = client.seqno(&wallet.address).await?;
    let valid_until =
        u32::try_from(client.chain_time().await?.saturating_add(u64::from(custody.message_ttl_s))).unwrap_or(u32::MAX);
    let envelope = ton::Envelope { seqno, valid_until, deploy: !deployed };
    let message = match ton::withdrawal(wallet, jetton_wallet, &to, w.amount_nano, query_id(w), envelope) {
        Ok(m) => m,
        Err(e) => {
            settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, &e.to_string()));
            return Ok(());
        }
    };
    let recorded = coordinator.with_core(|core, _| {
        match core.withdrawal_signed(now_ms(), w.id, &message.body_hash, message.boc.clone(), u64::from(valid_until)) {
            Ok(effects) => (true, effects),
            Err(e) => {
                tracing::error!(withdrawal = %w.id, error = %e, "signed withdrawal not recorded; not sent");
                (false, Vec::new())
            }
        }
    });
    if !recorded {
        return Ok(());
    }
    // Durable before a byte leaves: after a crash from here on, the restarted coordinator finds this message.
    coordinator.flush().await;
    if crash_point("NEUROLOV_CRASH_AFTER_SIGNING") {
        tracing::warn!(withdrawal = %w.id, "NEUROLOV_CRASH_AFTER_SIGNING: exiting before the send");
        std::process::exit(86);
    }
    tracing::info!(withdrawal = %w.id, body_hash = %message.body_hash, seqno, to = %to, amount_nano = w.amount_nano,
        "ton withdrawal sent");
    if let Err(e) = client.send_boc(&message.boc).await {
        tracing::warn!(withdrawal = %w.id, error = %e, "sending failed");
    }
    if crash_point("NEUROLOV_CRASH_AFTER_SENDING") {
        tracing::warn!(withdrawal = %w.id, "NEUROLOV_CRASH_AFTER_SENDING: exiting before the confirmation");
        std::process::exit(87);
    }
    Ok(())
}

async fn settle_signed(
    coordinator: &Coordinator,
    client: &TonClient,
    custody: &TonCustody,
    jetton_wallet: &TonAddress,
    w: &Withdrawal,
) -> Result<(), TonApiError> {
    let WithdrawalState::Signed { tx_id: body_hash, signed_tx, .. } = &w.state else { return Ok(()) };
    let Ok((message_seqno, valid_until)) = ton::signed_seqno(signed_tx) else {
        tracing::error!(withdrawal = %w.id, "a recorded message does not parse; left for the audit");
        return Ok(());
    };
    let wallet = &custody.custody.address;
    // Time first: if it is past `valid_until` and the seqno read after it has not moved, the message never can.
    let chain_time = client.chain_time().await?;
    let seqno = client.seqno(wallet).await?;
    if seqno <= message_seqno {
        if chain_time > u64::from(valid_until) {
            settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, "expired without being accepted"));
            coordinator.flush().await;
        } else if let Err(e) = client.send_boc(signed_tx).await {
            tracing::debug!(withdrawal = %w.id, error = %e, "re-sending failed");
        }
        return Ok(());
    }
    // Accepted: what did the custody's jetton wallet do with it?
    let Some(accepted) = find_accepted(client, wallet, body_hash).await? else {
        tracing::error!(withdrawal = %w.id, %body_hash, "accepted (seqno moved) but its transaction is not found");
        return Ok(());
    };
    if accepted.out_msgs.is_empty() {
        settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, "the custody wallet sent nothing"));
    } else {
        // Everything the jetton wallet did since the wallet's transaction (paged: it is busy with deposits too).
        let txs = since(client, jetton_wallet, accepted.lt).await?;
        match ton::transfer_outcome(&txs, wallet, query_id(w)) {
            Some(true) => settle(coordinator, |core| core.withdrawal_confirmed(now_ms(), w.id)),
            Some(false) => {
                let reason = "refused by the custody's jetton wallet";
                settle(coordinator, |core| core.withdrawal_failed(now_ms(), w.id, reason));
            }
            None => return Ok(()), // not processed yet
        }
    }
    coordinator.flush().await;
    Ok(())
}

/// The custody wallet's transaction that accepted the message with `body_hash`, searched newest first.
async fn find_accepted(
    client: &TonClient,
    wallet: &TonAddress,
    body_hash: &str,
) -> Result<Option<neurolov_chain::toncenter::TonTransaction>, TonApiError> {
    let mut cursor: Option<(u64, String)> = None;
    for _ in 0..MAX_PAGES_SEARCHED {
        let from = cursor.as_ref().map(|(lt, hash)| (*lt, hash.as_str()));
        let page = client.transactions(wallet, MAX_TRANSACTIONS_PER_PAGE, from, 0).await?;
        if let Some(tx) = ton::accepted(&page, body_hash) {
            return Ok(Some(tx.clone()));
        }
        match page.last() {
            Some(oldest) if page.len() == MAX_TRANSACTIONS_PER_PAGE => {
                cursor = Some((oldest.lt, oldest.hash.clone()));
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}
