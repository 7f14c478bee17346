//! `neurolov keys`: the API keys of the OpenAI-compatible API. Each is made, listed and revoked by a request signed
//! with the account it spends from; the secret is printed once, at creation (the coordinator keeps only its hash).

use clap::Subcommand;
use neurolov_api::openai as oa;

use crate::net::{ClientArgs, load_or_create_key, runtime, signed_get, signed_post};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// A new key spending from your account; its secret is printed this once.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Your keys (never their secrets).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stops a key from working, at once and for good.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        /// The key's id (from `keys list`).
        id: String,
    },
}

fn line(k: &oa::KeyEntry) -> String {
    let state = match k.revoked_ms {
        Some(ms) => format!("revoked at {ms}"),
        None => "active".to_string(),
    };
    format!("{}  {:<20} {state}", k.id, if k.name.is_empty() { "-" } else { &k.name })
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        KeysCommand::Create { client, name } => {
            let kp = load_or_create_key(client.key)?;
            let body = serde_json::to_vec(&oa::KeyRequest { name })?;
            let base = client.coordinator.trim_end_matches('/');
            let created: oa::KeyCreated = rt.block_on(signed_post(base, &kp, "/v1/keys", body))?;
            if client.json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!("{}", created.key);
                eprintln!(
                    "key {} spends from {}; this is the only time its secret is shown",
                    created.entry.id, created.entry.owner
                );
            }
        }
        KeysCommand::List { client } => {
            let kp = load_or_create_key(client.key)?;
            let base = client.coordinator.trim_end_matches('/');
            let list: Vec<oa::KeyEntry> = rt.block_on(signed_get(base, &kp, "/v1/keys"))?;
            if client.json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                list.iter().for_each(|k| println!("{}", line(k)));
            }
        }
        KeysCommand::Revoke { client, id } => {
            let kp = load_or_create_key(client.key)?;
            let base = client.coordinator.trim_end_matches('/');
            let path = format!("/v1/keys/{id}/revoke");
            let entry: oa::KeyEntry = rt.block_on(signed_post(base, &kp, &path, Vec::new()))?;
            if client.json {
                println!("{}", serde_json::to_string(&entry)?);
            } else {
                println!("{}", line(&entry));
            }
        }
    }
    Ok(())
}
