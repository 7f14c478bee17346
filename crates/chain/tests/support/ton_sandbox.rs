//! Starts `tests/ton/sandbox.mjs` — the TON emulator (`@ton/sandbox`, the real TVM, the standard jetton contracts)
//! behind a toncenter-style API on a loopback port — and drives its test-only routes (deploy a wallet, deploy and mint
//! the jetton). `scripts/test` installs its npm packages; without them the TON tests are skipped unless
//! `NEUROLOV_REQUIRE_TON=1` makes that a failure.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use neurolov_chain::ton::TonAddress;

pub struct TonSandbox {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    http: reqwest::Client,
}

fn sandbox_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chain/tests/ton")
}

impl TonSandbox {
    /// The sandbox, or None (with a note) when its packages are not installed and not required.
    pub fn start() -> Option<TonSandbox> {
        let dir = sandbox_dir();
        let required = std::env::var("NEUROLOV_REQUIRE_TON").as_deref() == Ok("1");
        if !dir.join("node_modules/@ton/sandbox").exists() {
            assert!(!required, "NEUROLOV_REQUIRE_TON=1 but {} has no node_modules (run npm ci there)", dir.display());
            eprintln!("skipped: the TON sandbox is not installed (npm ci in {})", dir.display());
            return None;
        }
        let mut child = Command::new("node")
            .arg("sandbox.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("the sandbox prints its port");
        let port =
            serde_json::from_str::<serde_json::Value>(&line).expect("a json line")["port"].as_u64().expect("a port");
        Some(TonSandbox { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() })
    }

    /// The toncenter-style API's base URL.
    pub fn api(&self) -> String {
        format!("{}/api/v2", self.base)
    }

    async fn control(&self, route: &str, body: serde_json::Value) -> serde_json::Value {
        let reply: serde_json::Value = self
            .http
            .post(format!("{}/sandbox/{route}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the sandbox answers")
            .json()
            .await
            .expect("json");
        assert_eq!(reply["ok"], true, "sandbox {route}: {reply}");
        reply["result"].clone()
    }

    /// Deploys a wallet v4r2 for `public_key` with `ton` toncoin.
    pub async fn deploy_wallet(&self, public_key: &[u8], ton: &str) -> TonAddress {
        let hex: String = public_key.iter().map(|b| format!("{b:02x}")).collect();
        let reply = self.control("wallet", serde_json::json!({ "public_key": hex, "ton": ton })).await;
        reply["address"].as_str().expect("an address").parse().expect("a TON address")
    }

    /// `count` plain toncoin transfers to `to`: transactions that are not deposits.
    pub async fn ping(&self, to: &TonAddress, count: u32) {
        self.control("ping", serde_json::json!({ "to": to.to_hex(), "count": count })).await;
    }

    /// Deploys the standard jetton minter, mints `supply` to `owner`, and with `revoke` drops its admin.
    pub async fn deploy_jetton(&self, supply: u64, owner: &TonAddress, revoke: bool) -> TonAddress {
        let body = serde_json::json!({ "supply": supply.to_string(), "owner": owner.to_hex(), "revoke": revoke });
        let reply = self.control("jetton", body).await;
        reply["master"].as_str().expect("a master").parse().expect("a TON address")
    }
}

impl Drop for TonSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
