//! `neurolov chain` (issue 14): NLOV's genesis on a Solana cluster (the mint, the eight buckets as custody token
//! accounts, the allocations minted and the mint authority revoked), and `status`: the custody's balances on Solana
//! or TON beside what the coordinator's ledger says it must hold.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use neurolov_api as api;
use neurolov_chain::rpc::{Client, SignatureStatus};
use neurolov_chain::solana::{self, Rent};
use neurolov_chain::ton;
use neurolov_ledger::{Bucket, TOTAL_SUPPLY_NANO, format_nlov};
use neurolov_protocol::chain::Chain;
use solana_signer::Signer as _;

use crate::net::{get_json, read_key, runtime, solana_keypair};

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Create NLOV on a Solana cluster: the mint (9 decimals), the buckets as token accounts of the custody, the
    /// whole supply minted into them and the mint authority revoked. Prints the mint's address.
    Genesis {
        /// The cluster's JSON-RPC endpoint.
        #[arg(long)]
        rpc: String,
        /// The custody's keypair file (it pays, and owns every bucket).
        #[arg(long)]
        custody_key: PathBuf,
        /// The mint's keypair file (its address becomes NLOV's mint).
        #[arg(long)]
        mint_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The custody's NLOV on a chain beside what the coordinator's ledger says it must hold; exits non-zero when
    /// they disagree. On TON it also checks that the jetton can no longer be minted.
    Status {
        /// `solana` or `ton`.
        #[arg(long, default_value = "solana")]
        chain: String,
        /// Solana: the JSON-RPC endpoint. TON: the toncenter-style API (`…/api/v2`).
        #[arg(long)]
        rpc: String,
        /// NLOV's SPL mint address (Solana) or jetton master address (TON).
        #[arg(long)]
        mint: String,
        /// The custody's address (on TON: its wallet).
        #[arg(long)]
        custody: String,
        #[arg(long, default_value = crate::net::DEFAULT_COORDINATOR)]
        coordinator: String,
        #[arg(long)]
        json: bool,
    },
}

/// `ledger audit`'s chain endpoints: each chain given is held against the audited ledger, as `chain status` does
/// against a running coordinator's.
#[derive(clap::Args)]
pub struct AuditChains {
    /// A Solana JSON-RPC endpoint to check the custody there.
    #[arg(long, requires_all = ["solana_mint", "solana_custody"])]
    solana_rpc: Option<String>,
    #[arg(long)]
    solana_mint: Option<String>,
    /// The Solana custody's address.
    #[arg(long)]
    solana_custody: Option<String>,
    /// A toncenter-style API to check the custody on TON.
    #[arg(long, requires_all = ["ton_jetton_master", "ton_custody"])]
    ton_api: Option<String>,
    #[arg(long)]
    ton_jetton_master: Option<String>,
    /// The TON custody's wallet address.
    #[arg(long)]
    ton_custody: Option<String>,
}

/// One chain's custody held against the ledger.
#[derive(serde::Serialize)]
pub struct ChainCheck {
    pub chain: String,
    #[serde(flatten)]
    pub status: Status,
}

impl AuditChains {
    pub async fn check(&self, ledger: &[api::ChainView]) -> anyhow::Result<Vec<ChainCheck>> {
        let view = |chain: Chain| {
            ledger.iter().find(|c| c.chain == chain.as_str()).with_context(|| format!("the audit lists no {chain}"))
        };
        let mut checks = Vec::new();
        if let (Some(rpc), Some(mint), Some(custody)) = (&self.solana_rpc, &self.solana_mint, &self.solana_custody) {
            let status = status(rpc, mint, custody, view(Chain::Solana)?).await?;
            checks.push(ChainCheck { chain: Chain::Solana.to_string(), status });
        }
        if let (Some(api_url), Some(master), Some(custody)) =
            (&self.ton_api, &self.ton_jetton_master, &self.ton_custody)
        {
            let status = ton_status(api_url, master, custody, view(Chain::Ton)?).await?;
            checks.push(ChainCheck { chain: Chain::Ton.to_string(), status });
        }
        Ok(checks)
    }
}

/// What `chain status` finds.
#[derive(serde::Serialize)]
pub struct Status {
    pub custody_nano: u64,
    pub expected_nano: u64,
    pub in_flight_nano: u64,
    pub agrees: bool,
}

pub fn chain(cmd: ChainCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        ChainCommand::Genesis { rpc, custody_key, mint_key, json } => {
            let (custody, mint) = (solana_keypair(&read_key(&custody_key)?), solana_keypair(&read_key(&mint_key)?));
            rt.block_on(genesis(&rpc, &custody, &mint))?;
            if json {
                println!("{}", serde_json::json!({ "mint": mint.pubkey().to_string() }));
            } else {
                println!("NLOV minted on {rpc}: mint {}, custody {}", mint.pubkey(), custody.pubkey());
            }
        }
        ChainCommand::Status { chain, rpc, mint, custody, coordinator, json } => {
            let chain: Chain = chain.parse().map_err(|_| anyhow::anyhow!("--chain is solana or ton"))?;
            let status = rt.block_on(async {
                let ledger = ledger_view(&coordinator, chain).await?;
                match chain {
                    Chain::Solana => status(&rpc, &mint, &custody, &ledger).await,
                    Chain::Ton => ton_status(&rpc, &mint, &custody, &ledger).await,
                }
            })?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!(
                    "{chain} custody {} NLOV; the ledger expects {} NLOV ({} NLOV in flight): {}",
                    format_nlov(u128::from(status.custody_nano)),
                    format_nlov(u128::from(status.expected_nano)),
                    format_nlov(u128::from(status.in_flight_nano)),
                    if status.agrees { "agree" } else { "DISAGREE" }
                );
            }
            if !status.agrees {
                bail!("the custody on {chain} does not match the ledger");
            }
        }
    }
    Ok(())
}

async fn genesis(rpc: &str, custody: &solana::Keypair, mint: &solana::Keypair) -> anyhow::Result<()> {
    let client = Client::new(rpc)?;
    let rent = Rent {
        mint_lamports: client.rent_exempt_lamports(solana::MINT_BYTES).await?,
        token_account_lamports: client.rent_exempt_lamports(solana::TOKEN_ACCOUNT_BYTES).await?,
    };
    let blockhash = client.latest_blockhash().await?;
    // One after the other: each needs the accounts the one before made.
    for (i, tx) in solana::genesis(custody, mint, rent, blockhash.hash)?.iter().enumerate() {
        let signature = client.send(tx).await?;
        wait_finalized(&client, &signature).await.with_context(|| format!("genesis transaction {}", i + 1))?;
    }
    Ok(())
}

/// Waits (bounded) until `signature` is finalized; an error if it failed or never showed up.
async fn wait_finalized(client: &Client, signature: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        match client.signature_statuses(&[signature.to_string()]).await?.pop() {
            Some(SignatureStatus::Landed { commitment }) if commitment == "finalized" => return Ok(()),
            Some(SignatureStatus::Failed(err)) => bail!("failed: {err}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
    bail!("{signature} was not finalized within a minute")
}

/// What the coordinator's ledger says of `chain`.
async fn ledger_view(coordinator: &str, chain: Chain) -> anyhow::Result<api::ChainView> {
    let chains: Vec<api::ChainView> = get_json(format!("{}/v1/chains", coordinator.trim_end_matches('/'))).await?;
    chains
        .into_iter()
        .find(|c| c.chain == chain.as_str())
        .with_context(|| format!("the coordinator does not list {chain}"))
}

/// Custody agrees with the ledger when it holds what the ledger expects, or less by at most what is in flight (a
/// signed withdrawal may have landed before it is confirmed).
fn agreement(custody_nano: u64, expected_nano: u64, ledger: &api::ChainView) -> Status {
    let agrees = custody_nano <= expected_nano && custody_nano >= expected_nano.saturating_sub(ledger.in_flight_nano);
    Status { custody_nano, expected_nano, in_flight_nano: ledger.in_flight_nano, agrees }
}

/// TON: the custody's jetton balance against the jetton's supply less what the ledger says is outside; a jetton
/// with an admin left (it could be minted beyond custody) never agrees.
async fn ton_status(api_url: &str, master: &str, custody: &str, ledger: &api::ChainView) -> anyhow::Result<Status> {
    let client = neurolov_chain::toncenter::TonClient::new(api_url)?;
    let (master, custody) = (ton::parse_address(master)?, ton::parse_address(custody)?);
    let (supply_nano, admin) = client.jetton_data(&master).await?;
    let jetton_wallet = client.jetton_wallet(&master, &custody).await?;
    let custody_nano = client.jetton_balance(&jetton_wallet).await?;
    let mut status = agreement(custody_nano, supply_nano.saturating_sub(ledger.outside_nano), ledger);
    if let Some(admin) = admin {
        eprintln!("the jetton still has an admin ({admin}): its supply can grow beyond custody");
        status.agrees = false;
    }
    if ledger.outside_nano > supply_nano {
        eprintln!("the ledger has more NLOV outside on TON than the jetton's whole supply");
        status.agrees = false;
    }
    Ok(status)
}

async fn status(rpc: &str, mint: &str, custody: &str, ledger: &api::ChainView) -> anyhow::Result<Status> {
    let client = Client::new(rpc)?;
    let (mint, custody) = (solana::parse_address(mint)?, solana::parse_address(custody)?);
    let mut custody_nano = 0u64;
    for bucket in Bucket::ALL {
        let balance = client.token_balance(&solana::bucket_account(&custody, &mint, bucket)).await?.unwrap_or(0);
        custody_nano = custody_nano.checked_add(balance).context("custody balances overflow")?;
    }
    Ok(agreement(custody_nano, TOTAL_SUPPLY_NANO.saturating_sub(ledger.outside_nano), ledger))
}
