//! `neurolov wallet` (balance, transfer, history, faucet, stake, unstake) against a coordinator's HTTP API, and
//! `neurolov ledger audit` against a coordinator's data directory. Amounts are typed in NLOV and sent as integer
//! nano-NLOV.

use neurolov_api as api;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use neurolov_ledger::{format_nlov, parse_nlov};

use crate::net::{ClientArgs, data_dir, get_json, load_or_create_key, runtime, signed_post};

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Balance, pending, staked and unstaking NLOV of an address (default: your key's).
    Balance {
        #[command(flatten)]
        client: ClientArgs,
        /// Any address (base58); default: the key's.
        #[arg(long)]
        address: Option<String>,
    },
    /// Send NLOV to an address.
    Transfer {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        to: String,
        /// Amount in NLOV, e.g. `1.5`.
        #[arg(long)]
        amount: String,
        /// Your id for this transfer: sending the same id again is applied once (default: random).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Recent transfers of an address's wallet and stake.
    History {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        address: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Withdraw NLOV from the network to an address on a chain (Solana: the owner whose token account receives it).
    Withdraw {
        #[command(flatten)]
        client: ClientArgs,
        /// `solana` or `ton`.
        #[arg(long)]
        chain: String,
        /// The destination address; default: your key's own (a Neurolov id is a Solana address; on TON, the v4r2
        /// wallet of the same key).
        #[arg(long)]
        to: Option<String>,
        /// Amount in NLOV, e.g. `1.5`.
        #[arg(long)]
        amount: String,
        /// Your id for this withdrawal: asking again with the same id is the same withdrawal (default: random).
        #[arg(long)]
        id: Option<u64>,
        /// Check the withdrawal (destination, balance, limits) and hold nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Where to send NLOV on a chain to have it credited to your account here (and the memo to put on it).
    DepositAddress {
        #[command(flatten)]
        client: ClientArgs,
        /// `solana` or `ton`.
        #[arg(long)]
        chain: String,
    },
    /// Withdrawals of an address to chains, newest first, with their chain transaction ids.
    Withdrawals {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        address: Option<String>,
    },
    /// Development networks only: a one-time grant from the ecosystem fund.
    Faucet {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lock NLOV as stake: fewer spot checks, higher scheduling priority, slashed for proven fraud.
    Stake(StakeArgs),
    /// Start unstaking: the NLOV returns to the wallet after the unstaking delay.
    Unstake(StakeArgs),
}

/// A stake or unstake: how much, and the request's id (sending the same id again is applied once).
#[derive(clap::Args)]
pub struct StakeArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    amount: String,
    #[arg(long)]
    id: Option<u64>,
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute every balance from the transfer log and check the invariants; exits non-zero if any fails.
    Audit {
        /// The coordinator's data directory (default: the user's).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        chains: crate::chain::AuditChains,
    },
}

fn nano(text: &str) -> anyhow::Result<u64> {
    match parse_nlov(text) {
        Some(0) => bail!("amount must be positive"),
        Some(n) => Ok(n),
        None => bail!("not an NLOV amount: {text} (digits, at most 9 decimals)"),
    }
}

fn request_id(id: Option<u64>) -> u64 {
    id.unwrap_or_else(|| fastrand::u64(..))
}

fn show(json: bool, reply: &impl serde::Serialize, human: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(reply)?);
    } else {
        println!("{human}");
    }
    Ok(())
}

fn nlov(nano: u64) -> String {
    format_nlov(u128::from(nano))
}

/// A signed stake or unstake of `amount` NLOV.
async fn stake_request<T: serde::de::DeserializeOwned>(args: StakeArgs, path: &str) -> anyhow::Result<T> {
    let kp = load_or_create_key(args.client.key)?;
    let body = serde_json::to_vec(&api::StakeRequest { amount_nano: nano(&args.amount)?, id: request_id(args.id) })?;
    signed_post(args.client.coordinator.trim_end_matches('/'), &kp, path, body).await
}

pub fn wallet(cmd: WalletCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        WalletCommand::Balance { client: ClientArgs { coordinator, key, json }, address } => {
            let address = match address {
                Some(a) => a,
                None => load_or_create_key(key)?.id().to_string(),
            };
            let base = coordinator.trim_end_matches('/');
            let v: api::Account = rt.block_on(get_json(format!("{base}/v1/accounts/{address}")))?;
            let human = format!(
                "{address}: {} NLOV ({} reserved), {} staked, {} unstaking",
                nlov(v.balance_nano),
                nlov(v.pending_nano),
                nlov(v.staked_nano),
                nlov(v.unstaking_nano)
            );
            show(json, &v, human)?;
        }
        WalletCommand::Transfer { client: ClientArgs { coordinator, key, json }, to, amount, id } => {
            let kp = load_or_create_key(key)?;
            let amount_nano = nano(&amount)?;
            let body = serde_json::to_vec(&api::TransferRequest { to: to.clone(), amount_nano, id: request_id(id) })?;
            let v: api::TransferReply =
                rt.block_on(signed_post(coordinator.trim_end_matches('/'), &kp, "/v1/wallet/transfer", body))?;
            show(json, &v, format!("sent {} NLOV to {to} ({})", nlov(amount_nano), v.outcome))?;
        }
        WalletCommand::Withdraw { client: ClientArgs { coordinator, key, json }, chain, to, amount, id, dry_run } => {
            let kp = load_or_create_key(key)?;
            let amount_nano = nano(&amount)?;
            let to = match to {
                Some(to) => to,
                None if chain == "ton" => {
                    neurolov_chain::ton::friendly(&crate::net::ton_wallet(&kp)?.address, true, false)
                }
                None => kp.id().to_string(),
            };
            let req = api::WithdrawRequest { chain, to: to.clone(), amount_nano, id: request_id(id) };
            if dry_run {
                let base = coordinator.trim_end_matches('/');
                let path = "/v1/wallet/withdraw/check";
                let v: api::WithdrawCheck = rt.block_on(signed_post(base, &kp, path, serde_json::to_vec(&req)?))?;
                let waits = if v.custody_running {
                    ""
                } else {
                    " (this coordinator keeps no custody there yet: it would wait)"
                };
                let text = format!(
                    "would withdraw {} NLOV to {to} on {} for a fee of {} NLOV{waits}; {} NLOV left today after it; \
                     nothing held",
                    nlov(amount_nano),
                    v.chain,
                    nlov(v.fee_nano),
                    nlov(v.daily_left_nano)
                );
                show(json, &v, text)?;
                return Ok(());
            }
            let v: api::WithdrawalView = rt.block_on(signed_post(
                coordinator.trim_end_matches('/'),
                &kp,
                "/v1/wallet/withdraw",
                serde_json::to_vec(&req)?,
            ))?;
            show(
                json,
                &v,
                format!(
                    "withdrawing {} NLOV (fee {} NLOV) to {to} on {}: {} ({})",
                    nlov(amount_nano),
                    nlov(v.fee_nano),
                    v.chain,
                    v.state,
                    v.id
                ),
            )?;
        }
        WalletCommand::DepositAddress { client: ClientArgs { coordinator, key, json }, chain } => {
            let id = load_or_create_key(key)?.id().to_string();
            let base = coordinator.trim_end_matches('/');
            let chains: Vec<api::ChainView> = rt.block_on(get_json(format!("{base}/v1/chains")))?;
            let Some(address) = chains.iter().find(|c| c.chain == chain).and_then(|c| c.deposit_address.clone()) else {
                bail!("this coordinator takes no deposits on {chain}");
            };
            if json {
                println!("{}", serde_json::json!({ "chain": chain, "address": address, "memo": id }));
            } else {
                let memo = if chain == "ton" { "comment (forward payload, with a forward amount)" } else { "memo" };
                println!("send NLOV on {chain} to {address} with the {memo} {id}");
            }
        }
        WalletCommand::Withdrawals { client: ClientArgs { coordinator, key, json }, address } => {
            let address = match address {
                Some(a) => a,
                None => load_or_create_key(key)?.id().to_string(),
            };
            let base = coordinator.trim_end_matches('/');
            let v: Vec<api::WithdrawalView> =
                rt.block_on(get_json(format!("{base}/v1/accounts/{address}/withdrawals")))?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                for w in &v {
                    let tx = w.tx_id.as_deref().unwrap_or("-");
                    println!(
                        "{:>14} {:>20} NLOV  {:<6} {:<9} {} {tx}",
                        w.requested_ms,
                        nlov(w.amount_nano),
                        w.chain,
                        w.state,
                        w.to
                    );
                }
            }
        }
        WalletCommand::History { client: ClientArgs { coordinator, key, json }, address, limit } => {
            let address = match address {
                Some(a) => a,
                None => load_or_create_key(key)?.id().to_string(),
            };
            let base = coordinator.trim_end_matches('/');
            let v: Vec<api::HistoryEntry> =
                rt.block_on(get_json(format!("{base}/v1/accounts/{address}/transfers?limit={limit}")))?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                for t in &v {
                    let sign = if t.direction == "in" { "+" } else { "-" };
                    let on_chain = match (&t.chain, &t.chain_tx) {
                        (Some(chain), Some(tx)) => format!("  {chain} {tx}"),
                        (Some(chain), None) => format!("  {chain} (not signed yet)"),
                        _ => String::new(),
                    };
                    println!(
                        "{:>14} {sign}{:>20} NLOV  {:<22} {}{on_chain}",
                        t.transfer.timestamp_ms,
                        nlov(t.transfer.amount_nano),
                        t.transfer.code,
                        t.account
                    );
                }
            }
        }
        WalletCommand::Faucet { client: ClientArgs { coordinator, key, json } } => {
            let kp = load_or_create_key(key)?;
            let v: api::FaucetReply =
                rt.block_on(signed_post(coordinator.trim_end_matches('/'), &kp, "/v1/faucet", b"{}".to_vec()))?;
            show(json, &v, format!("{} received {} NLOV", kp.id(), nlov(v.granted_nano)))?;
        }
        WalletCommand::Stake(args) => {
            let json = args.client.json;
            let v: api::StakeReply = rt.block_on(stake_request(args, "/v1/wallet/stake"))?;
            show(json, &v, format!("staked {} NLOV", nlov(v.staked_nano)))?;
        }
        WalletCommand::Unstake(args) => {
            let json = args.client.json;
            let v: api::UnstakeReply = rt.block_on(stake_request(args, "/v1/wallet/unstake"))?;
            show(json, &v, format!("unstaking {} NLOV; released at {} ms", nlov(v.unstaking_nano), v.release_ms))?;
        }
    }
    Ok(())
}

pub fn ledger(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Audit { data, json, chains } => {
            let data = match data {
                Some(d) => d,
                None => data_dir()?.join("coordinator"),
            };
            let rt = runtime()?;
            let mut report = rt.block_on(neurolov_coordinator::audit::audit(&data)).context("auditing")?;
            let checks = rt.block_on(chains.check(&report.chains))?;
            for check in checks.iter().filter(|c| !c.status.agrees) {
                report.problems.push(format!(
                    "custody on {} holds {} nano-NLOV; the ledger expects {} ({} in flight)",
                    check.chain, check.status.custody_nano, check.status.expected_nano, check.status.in_flight_nano
                ));
            }
            report.audit_ok = report.problems.is_empty();
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["chain_checks"] = serde_json::to_value(&checks)?;
                println!("{v}");
            } else {
                for c in &checks {
                    println!(
                        "{} custody {} NLOV; the ledger expects {} NLOV",
                        c.chain,
                        format_nlov(u128::from(c.status.custody_nano)),
                        format_nlov(u128::from(c.status.expected_nano))
                    );
                }
                println!(
                    "{} accounts, {} transfers, total supply {} NLOV, {} NLOV in escrow, {} staked; {} jobs checked",
                    report.accounts,
                    report.transfers,
                    format_nlov(u128::from(report.total_supply_nano)),
                    format_nlov(u128::from(report.escrow_nano)),
                    format_nlov(u128::from(report.staked_nano)),
                    report.jobs_checked
                );
                for p in &report.problems {
                    println!("problem: {p}");
                }
                println!("audit: {}", if report.audit_ok { "ok" } else { "FAILED" });
            }
            if !report.audit_ok {
                bail!("the ledger does not audit");
            }
            Ok(())
        }
    }
}
