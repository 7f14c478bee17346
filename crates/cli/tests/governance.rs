//! DAO governance end to end (issue 16) with real processes: stakers propose through `neurolov gov` to raise the
//! protocol fee, vote, queue; the coordinator is SIGKILLed between queue and execute and, restarted after the
//! timelock, executes the proposal exactly once — and the next job pays the new fee. The dashboard shows it.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Procs, active_nodes, get_json, neurolov, serve_args, start_node, submit, temp_dir, wait_for};

const DELAY_MS: u64 = 1_500;
const PERIOD_MS: u64 = 4_000;
const TIMELOCK_MS: u64 = 3_000;

fn gov(url: &str, key: &std::path::Path, args: &[&str]) -> std::process::Output {
    neurolov().arg("gov").args(args).args(["--json", "--coordinator", url, "--key"]).arg(key).output().unwrap()
}

fn proposal(url: &str, id: u64) -> serde_json::Value {
    get_json(&format!("{url}/v1/gov/proposals/{id}"))
}

/// Treasury fees over provider pay during one job: the protocol fee's rate.
fn fee_rate_of_a_job(dir: &std::path::Path, url: &str) -> f64 {
    let before = get_json(&format!("{url}/v1/stats"))["ledger"].clone();
    let job = submit(dir, url, "256x64x64", true);
    assert_eq!(get_json(&format!("{url}/v1/jobs/{}", job["id"]))["state"], "done");
    // Paid once the results are final (and the statistics are at most 250 ms old).
    let mut after = serde_json::Value::Null;
    wait_for("the job's pay", Duration::from_secs(30), || {
        after = get_json(&format!("{url}/v1/stats"))["ledger"].clone();
        after["fees_nano"] != before["fees_nano"]
    });
    std::thread::sleep(Duration::from_millis(1_000));
    after = get_json(&format!("{url}/v1/stats"))["ledger"].clone();
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    delta("fees_nano") as f64 / delta("paid_to_providers_nano") as f64
}

#[test]
fn a_passed_proposal_changes_the_fee_once_even_across_a_crash_between_queue_and_execute() {
    let dir = temp_dir("governance");
    let mut procs = Procs(Vec::new());
    let delay = DELAY_MS.to_string();
    let period = PERIOD_MS.to_string();
    let timelock = TIMELOCK_MS.to_string();
    let args = [
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--gov-proposal-threshold",
        "100",
        "--gov-quorum",
        "300",
        "--gov-voting-delay-ms",
        &delay,
        "--gov-voting-period-ms",
        &period,
        "--gov-timelock-ms",
        &timelock,
    ];
    let url = serve_args(&mut procs, &dir, &args);
    start_node(&mut procs, &dir, &url, "provider", "cpu");
    wait_for("the node", Duration::from_secs(60), || active_nodes(&url) == 1);
    let before = fee_rate_of_a_job(&dir, &url);
    assert!((before - 0.05).abs() < 1e-3, "the default fee is 5%: {before}");

    // Two stakers.
    let mut voters = Vec::new();
    for name in ["alice", "bob"] {
        let key = dir.join(format!("{name}.json"));
        assert!(neurolov().args(["keygen", "--out"]).arg(&key).output().unwrap().status.success());
        for args in [vec!["faucet"], vec!["stake", "--amount", "200"]] {
            let out =
                neurolov().arg("wallet").args(&args).args(["--coordinator", &url, "--key"]).arg(&key).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        voters.push(key);
    }
    // Below the threshold, out of range: refused.
    let poor = dir.join("poor.json");
    neurolov().args(["keygen", "--out"]).arg(&poor).output().unwrap();
    assert!(!gov(&url, &poor, &["propose", "--description", "x", "--set", r#"{"fee_bps":1000}"#]).status.success());
    let out = gov(&url, &voters[0], &["propose", "--description", "x", "--set", r#"{"fee_bps":9000}"#]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("0-2000"));

    let out =
        gov(&url, &voters[0], &["propose", "--description", "raise the fee to 10%", "--set", r#"{"fee_bps":1000}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_u64().unwrap();
    assert_eq!(proposal(&url, id)["state"], "pending");
    wait_for("the vote to open", Duration::from_secs(10), || proposal(&url, id)["state"] == "active");
    for key in &voters {
        let out = gov(&url, key, &["vote", &id.to_string(), "--support", "for"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(proposal(&url, id)["for_votes_nano"], 400 * neurolov_ledger::NANO_PER_NLOV);
    wait_for("the vote to end", Duration::from_secs(10), || proposal(&url, id)["state"] == "succeeded");
    let out = gov(&url, &voters[1], &["queue", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(proposal(&url, id)["state"], "queued");

    // SIGKILL between queue and execute; back after the timelock: the tick executes it, once.
    let mut coordinator = procs.0.remove(0);
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    std::thread::sleep(Duration::from_millis(TIMELOCK_MS + 200));
    let url = serve_args(&mut procs, &dir, &args);
    wait_for("the proposal to execute", Duration::from_secs(10), || proposal(&url, id)["state"] == "executed");
    let out = gov(&url, &voters[0], &["execute", &id.to_string()]);
    assert!(!out.status.success(), "executed twice");
    assert!(String::from_utf8_lossy(&out.stderr).contains("executed"), "{}", String::from_utf8_lossy(&out.stderr));

    // The next job pays the new fee (on a node of the restarted coordinator, which listens on a new port).
    start_node(&mut procs, &dir, &url, "provider-2", "cpu");
    wait_for("a node", Duration::from_secs(60), || active_nodes(&url) == 1);
    let after = fee_rate_of_a_job(&dir, &url);
    assert!((after - 0.10).abs() < 1e-3, "the fee is now 10%: {after}");

    // The dashboard's governance table shows it executed.
    let Some(chromium) = common::chromium() else { return };
    let dump = common::browser(&chromium, &dir.join("profile-dashboard"))
        .args(["--dump-dom", "--virtual-time-budget=5000", "--window-size=1280,1000"])
        .arg(format!("{url}/?voter={}", id_of(&voters[0])))
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dump.stdout);
    let row = dom.split(&format!("data-proposal=\"{id}\"")).nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or("");
    assert!(row.contains("raise the fee to 10%") && row.contains(">executed<"), "the dashboard's row: {row}");
    assert!(row.contains("class=\"your-vote\">for (200 NLOV)"), "alice's vote on the dashboard: {row}");
}

fn id_of(key: &std::path::Path) -> String {
    let text = std::fs::read_to_string(key).unwrap();
    neurolov_protocol::Keypair::from_solana_json(&text).unwrap().id().to_string()
}
