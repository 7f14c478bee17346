//! `neurolov gov` (issue 16): DAO governance against a coordinator — propose, vote, list, show, queue, execute,
//! cancel — each a signed request (`docs/API.md`, "Governance").

use anyhow::Context;
use clap::Subcommand;
use neurolov_api as api;
use neurolov_ledger::{format_nlov, parse_nlov};

use crate::net::{ClientArgs, get_json, load_or_create_key, runtime, signed_post};

#[derive(Subcommand)]
pub enum GovCommand {
    /// Propose a change (needs the proposal threshold staked). Without `--set` or `--spend-to` it is a text signal.
    Propose {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        description: String,
        /// A parameter change as JSON, e.g. `{"fee_bps": 300}` or
        /// `{"scheduler_weights": {"performance_bps": 6000, "reliability_bps": 2000, "cost_efficiency_bps": 2000}}`.
        #[arg(long, conflicts_with = "spend_to")]
        set: Option<String>,
        /// A treasury spend to this address (with `--amount`).
        #[arg(long, requires = "amount")]
        spend_to: Option<String>,
        /// NLOV for `--spend-to`, e.g. `1000`.
        #[arg(long)]
        amount: Option<String>,
    },
    /// Vote on a proposal: for, against or abstain (changeable until the vote ends).
    Vote {
        #[command(flatten)]
        client: ClientArgs,
        id: u64,
        #[arg(long)]
        support: String,
    },
    /// Every proposal, newest first, with your vote.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One proposal, with your vote and voting power.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: u64,
    },
    /// Put a succeeded proposal in the timelock.
    Queue {
        #[command(flatten)]
        client: ClientArgs,
        id: u64,
    },
    /// Execute a queued proposal whose timelock has run (the coordinator also does it on its own when it is due).
    Execute {
        #[command(flatten)]
        client: ClientArgs,
        id: u64,
    },
    /// Cancel your proposal (or anyone's whose proposer no longer has the threshold staked).
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        id: u64,
    },
}

fn human(p: &api::ProposalView) -> String {
    let nlov = |n: u64| format_nlov(u128::from(n));
    let left = if p.state == "pending" {
        format!(", vote opens in {} s", p.start_ms.saturating_sub(p.now_ms) / 1000)
    } else if p.state == "active" {
        format!(", {} s left", p.end_ms.saturating_sub(p.now_ms) / 1000)
    } else if p.state == "queued" {
        format!(", executable in {} s", p.eta_ms.unwrap_or(0).saturating_sub(p.now_ms) / 1000)
    } else {
        String::new()
    };
    let yours = match (&p.your_vote, p.your_power_nano) {
        (Some(v), Some(power)) => format!("; you voted {v} with {} NLOV", nlov(power)),
        (None, Some(power)) if power > 0 => format!("; you can vote with {} NLOV", nlov(power)),
        _ => String::new(),
    };
    format!(
        "#{} {} ({}{left}): for {} / against {} / abstain {} NLOV, quorum {}; {}{yours}",
        p.id,
        p.description,
        p.state,
        nlov(p.for_votes_nano),
        nlov(p.against_votes_nano),
        nlov(p.abstain_votes_nano),
        nlov(p.quorum_nano),
        p.action
    )
}

pub fn gov(cmd: GovCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    let post = |client: &ClientArgs, path: String, body: Vec<u8>| -> anyhow::Result<api::ProposalView> {
        let kp = load_or_create_key(client.key.clone())?;
        rt.block_on(signed_post(client.coordinator.trim_end_matches('/'), &kp, &path, body))
    };
    let me = |client: &ClientArgs| -> anyhow::Result<String> {
        Ok(load_or_create_key(client.key.clone())?.id().to_string())
    };
    match cmd {
        GovCommand::Propose { client, description, set, spend_to, amount } => {
            let action = match (set, spend_to, amount) {
                (Some(set), _, _) => {
                    let change: serde_json::Value = serde_json::from_str(&set).context("--set is JSON")?;
                    serde_json::json!({ "set_parameter": change })
                }
                (None, Some(to), Some(amount)) => {
                    let amount_nano = parse_nlov(&amount).context("--amount is an amount of NLOV")?;
                    serde_json::json!({ "treasury_spend": { "to": to, "amount_nano": amount_nano } })
                }
                _ => serde_json::json!("text"),
            };
            let body = serde_json::to_vec(&api::ProposalRequest { description, action })?;
            let p = post(&client, "/v1/gov/proposals".into(), body)?;
            show_one(client.json, &p)
        }
        GovCommand::Vote { client, id, support } => {
            let body = serde_json::to_vec(&api::VoteRequest { support })?;
            let p = post(&client, format!("/v1/gov/proposals/{id}/vote"), body)?;
            show_one(client.json, &p)
        }
        GovCommand::Queue { client, id } => {
            show_one(client.json, &post(&client, format!("/v1/gov/proposals/{id}/queue"), b"{}".to_vec())?)
        }
        GovCommand::Execute { client, id } => {
            show_one(client.json, &post(&client, format!("/v1/gov/proposals/{id}/execute"), b"{}".to_vec())?)
        }
        GovCommand::Cancel { client, id } => {
            show_one(client.json, &post(&client, format!("/v1/gov/proposals/{id}/cancel"), b"{}".to_vec())?)
        }
        GovCommand::List { client } => {
            let base = client.coordinator.trim_end_matches('/');
            let url = format!("{base}/v1/gov/proposals?voter={}", me(&client)?);
            let list: Vec<api::ProposalView> = rt.block_on(get_json(url))?;
            if client.json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                list.iter().for_each(|p| println!("{}", human(p)));
            }
            Ok(())
        }
        GovCommand::Show { client, id } => {
            let base = client.coordinator.trim_end_matches('/');
            let url = format!("{base}/v1/gov/proposals/{id}?voter={}", me(&client)?);
            let p: api::ProposalView = rt.block_on(get_json(url))?;
            show_one(client.json, &p)
        }
    }
}

fn show_one(json: bool, p: &api::ProposalView) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(p)?);
    } else {
        println!("{}", human(p));
    }
    Ok(())
}
