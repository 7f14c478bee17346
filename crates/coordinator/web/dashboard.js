// The dashboard: the network's key statistics, its nodes, the AI models it serves (the marketplace: prices, authors,
// providers, use and earnings), NLOV on chains (custody per chain, deposits and withdrawals), recent jobs and their
// verification, and a chart of throughput, all read from the coordinator's public API every two seconds.

import { activityRows, nlov } from "./chains.js";

const $ = (id) => document.getElementById(id);
/** The address whose votes the governance table shows (kept in this browser; `?voter=` sets it). */
const VOTER_KEY = "neurolov-voter";
function voter() {
  return $("voter")?.value.trim() || "";
}
function setUpVoter() {
  const given = new URLSearchParams(location.search).get("voter") ?? localStorage.getItem(VOTER_KEY) ?? "";
  $("voter").value = given;
  $("voter").onchange = () => localStorage.setItem(VOTER_KEY, voter());
}
const POLL_MS = 2000;
const HISTORY = 120;
const samples = []; // [ms, tasks_verified]

function text(id, value) {
  $(id).textContent = value;
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i][0] - samples[i - 1][0]) / 1000;
    rates.push(dt > 0 ? Math.max(0, samples[i][1] - samples[i - 1][1]) / dt : 0);
  }
  const max = Math.max(1, ...rates);
  ctx.strokeStyle = "#30363d";
  ctx.beginPath();
  ctx.moveTo(0, canvas.height - 1);
  ctx.lineTo(canvas.width, canvas.height - 1);
  ctx.stroke();
  ctx.strokeStyle = "#3fb950";
  ctx.lineWidth = 2;
  ctx.beginPath();
  rates.forEach((r, i) => {
    const x = (i / Math.max(1, HISTORY - 1)) * canvas.width;
    const y = canvas.height - 4 - (r / max) * (canvas.height - 20);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#8b949e";
  ctx.font = "12px system-ui";
  ctx.fillText(`max ${max.toFixed(1)}/s`, 4, 14);
}

async function poll() {
  try {
    const [stats, nodes, jobs, models, chains, activity, proposals] = await Promise.all(
      [
        "/v1/stats",
        "/v1/nodes",
        "/v1/jobs?limit=20",
        "/v1/models",
        "/v1/chains",
        "/v1/chains/activity?limit=20",
        `/v1/gov/proposals${voter() ? `?voter=${encodeURIComponent(voter())}` : ""}`,
      ].map((u) => fetch(u).then((r) => r.json())),
    );
    // The whitepaper's figures: GPU nodes apart from software adapters and CPUs; uptime and utilization as averages
    // over time (crates/core/src/usage.rs), not seconds since genesis or this instant's load.
    text("active-gpu-nodes", stats.active_gpu_nodes);
    text("other-nodes", `+ ${stats.active_software_nodes} software, ${stats.active_cpu_nodes} CPU`);
    text("verified-tflops", Number(stats.verified_tflops).toFixed(4));
    text("utilization", `${(Number(stats.utilization) * 100).toFixed(1)}%`);
    text("availability", `${(Number(stats.network_availability) * 100).toFixed(2)}%`);
    text("operational-hours", Number(stats.operational_hours).toFixed(1));
    text("jobs-done", stats.jobs_done);
    text("tasks-verified", stats.tasks_verified);
    text("frauds", stats.frauds_proven);
    text("supply", (Number(stats.ledger.total_supply_nano) / 1e9).toLocaleString("en"));
    samples.push([Date.now(), Number(stats.tasks_verified)]);
    if (samples.length > HISTORY) samples.shift();
    drawChart();

    const body = $("nodes");
    body.replaceChildren();
    for (const n of nodes) {
      const row = document.createElement("tr");
      row.dataset.node = n.id;
      cell(row, n.id.slice(0, 10) + "…", "mono");
      cell(row, n.kind);
      cell(row, `${n.adapter || "?"}${n.backend ? ` (${n.backend})` : ""}`);
      cell(row, n.state);
      cell(row, Number(n.gflops_verified).toFixed(2));
      cell(row, n.score == null ? "–" : Number(n.score).toFixed(3));
      cell(row, n.tasks_verified);
      body.appendChild(row);
    }
    // Nano-NLOV per 1,000 tokens is NLOV per 10⁹ … per million tokens: ÷ 10⁶.
    const perMillion = (nanoPer1k) => (Number(nanoPer1k) / 1e6).toLocaleString("en", { maximumFractionDigits: 6 });
    const mbody = $("models");
    mbody.replaceChildren();
    for (const m of models.data) {
      const row = document.createElement("tr");
      row.dataset.model = m.id;
      cell(row, m.id);
      cell(row, m.kind);
      cell(row, perMillion(m.price_input_nano_per_1k));
      cell(row, m.kind === "chat" ? perMillion(m.price_output_nano_per_1k) : "–");
      cell(row, m.owned_by === "neurolov" ? "open model (no royalty)" : `${m.owned_by.slice(0, 10)}… (${m.royalty_bps / 100}%)`);
      cell(row, m.providers);
      cell(row, m.usage.requests, "requests");
      cell(row, Number(m.usage.input_tokens) + Number(m.usage.output_tokens));
      cell(row, `${(Number(m.usage.royalties_nano) / 1e9).toLocaleString("en", { maximumFractionDigits: 9 })} NLOV`);
      mbody.appendChild(row);
    }
    const pbody = $("proposals");
    pbody.replaceChildren();
    for (const p of proposals.slice(0, 20)) {
      const row = document.createElement("tr");
      row.dataset.proposal = p.id;
      cell(row, p.id);
      cell(row, p.description);
      cell(row, typeof p.action === "string" ? p.action : JSON.stringify(p.action), "mono");
      cell(row, p.state, "state");
      for (const n of [p.for_votes_nano, p.against_votes_nano, p.abstain_votes_nano, p.quorum_nano]) {
        cell(row, `${nlov(n)} NLOV`);
      }
      const until = { pending: p.start_ms, active: p.end_ms, queued: p.eta_ms }[p.state];
      cell(row, until ? `${Math.max(0, Math.round((until - p.now_ms) / 1000))} s` : "–");
      const power = p.your_power_nano == null ? "" : ` (${nlov(p.your_power_nano)} NLOV)`;
      cell(row, p.your_vote ? `${p.your_vote}${power}` : p.your_power_nano ? `not yet${power}` : "–", "your-vote");
      pbody.appendChild(row);
    }
    const cbody = $("chains");
    cbody.replaceChildren();
    for (const c of chains) {
      const row = document.createElement("tr");
      row.dataset.chain = c.chain;
      cell(row, c.chain);
      cell(row, c.deposit_address ?? "no custody here", "mono");
      cell(row, `${nlov(c.outside_nano)} NLOV`, "outside");
      cell(row, `${nlov(c.requested_nano)} NLOV`);
      cell(row, `${nlov(c.in_flight_nano)} NLOV`);
      cbody.appendChild(row);
    }
    activityRows($("chain-activity"), activity.deposits, activity.withdrawals, true);
    const jbody = $("jobs");
    jbody.replaceChildren();
    for (const j of jobs) {
      const row = document.createElement("tr");
      cell(row, j.id);
      cell(row, j.kind);
      cell(row, j.state);
      cell(row, `${j.tasks_done}/${j.tasks_total}`);
      jbody.appendChild(row);
    }
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    console.warn("poll failed", e);
  }
}

setUpVoter();
poll();
setInterval(poll, POLL_MS);
