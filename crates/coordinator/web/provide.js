// The browser provider: this tab is a Neurolov node. It speaks the same protocol as `neurolov node`
// (docs/PROTOCOL.md), passes the same attestation, and runs the same WGSL kernels, fetched from the coordinator.
// This file runs the session and the page; the compute tiers (WebGPU, WebGL2, the CPU in a Web Worker) are in
// backends.js. By default it works only while the page is visible, and at most the duty cycle the user sets.
// With "serve AI models" it also answers inference tasks: the engine is the native node's, compiled to WebAssembly,
// in a Web Worker (infer-worker.js); each answer is committed and its proof opened when the coordinator asks.

import { cpu, detect, useLog, webgl2 } from "./backends.js";
import { activityRows } from "./chains.js";
import { blake3Hex, loadOrCreateIdentity, parseJson, seal, signRequest, toBase64 } from "./neurolov.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const HEARTBEAT_FALLBACK_MS = 30000;
const RECONNECT_MS = 3000;
/** Price asked, nano-NLOV per GFLOP (1 NLOV per TFLOP, as `neurolov node` by default). */
const PRICE_NANO_PER_GFLOP = 1000000;
/** Protocol version 3 (docs/PROTOCOL.md): tasks frames, inline inputs, small results inside a signed deliver frame,
 * blocks of seeded matrices (`offset`). */
const PROTOCOL_VERSION = 3;
/** Largest result delivered inside its frame rather than uploaded as a blob (the protocol's INLINE_RESULT_BYTES). */
const INLINE_RESULT_BYTES = 8192;

const state = {
  identity: null,
  backend: null, // {tier: "webgpu"|"webgl2"|"cpu", adapter, run(work) -> Uint8Array}
  ws: null,
  session: null,
  seq: 0,
  running: false,
  wanted: false,
  heartbeat: null,
  tasksDone: 0,
  tasksVerified: 0,
  tasksRejected: 0,
  busyMs: 0,
  startedMs: 0,
  queue: [],
  working: false,
  inference: null, // the inference worker, once models are to be served
  models: [], // the models loaded in it: claimed at registration
  onChange: null, // the embedding page's callback (the Telegram Mini App's), called whenever the page redraws
};

function log(msg) {
  const line = `${new Date().toISOString().slice(11, 19)} ${msg}`;
  const el = $("log");
  if (el) el.textContent = (line + "\n" + el.textContent).slice(0, 8000);
  console.log(line);
}
useLog(log);

function show() {
  $("node-id").textContent = state.identity?.id ?? "…";
  $("backend").textContent = state.backend ? `${state.backend.tier} · ${state.backend.adapter}` : "…";
  $("state").textContent = state.running ? (state.session ? "connected" : "connecting") : "stopped";
  $("tasks-done").textContent = String(state.tasksDone);
  $("tasks-verified").textContent = String(state.tasksVerified);
  $("tasks-rejected").textContent = String(state.tasksRejected);
  $("start").disabled = state.wanted;
  $("stop").disabled = !state.wanted;
  state.onChange?.(state);
}

// ---- the session ----
async function send(message) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  // Signed at send time, so sequence numbers leave in order.
  const frame = await seal(state.identity, { ...message, session: state.session, seq: message.seq ?? ++state.seq });
  state.ws.send(frame);
}

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/nodes/ws`;
  const ws = new WebSocket(url);
  state.ws = ws;
  state.seq = 0;
  ws.onmessage = (e) => onFrame(parseJson(e.data)).catch((err) => log(`error: ${err.message}`));
  ws.onclose = () => {
    clearInterval(state.heartbeat);
    state.session = null;
    state.queue = [];
    show();
    if (state.running) setTimeout(() => state.running && connect(), RECONNECT_MS);
  };
}

async function onFrame(msg) {
  switch (msg.type) {
    case "challenge":
      state.session = msg.nonce;
      await send({
        type: "register",
        version: PROTOCOL_VERSION,
        seq: 0,
        operator: state.identity.id,
        kind: "browser",
        claimed: {
          adapter: state.backend.adapter,
          backend: state.backend.tier,
          software: state.backend.software,
          memory_bytes: 0,
          features: [],
          // Only the WebGPU tier runs clients' WGSL: the coordinator sends WGSL tasks only to nodes that claim it.
          wgsl: state.backend.tier === "webgpu",
          models: state.models,
        },
        price_nano_per_gflop: PRICE_NANO_PER_GFLOP,
        slots: 1,
      });
      break;
    case "registered":
      log(`registered as ${msg.node}`);
      clearInterval(state.heartbeat);
      state.heartbeat = setInterval(() => send({ type: "heartbeat" }), Number(msg.heartbeat_interval_ms) || HEARTBEAT_FALLBACK_MS);
      break;
    case "task":
      state.queue.push(msg);
      work();
      break;
    case "tasks":
      state.queue.push(...msg.tasks);
      work();
      break;
    case "cancel":
      state.queue = state.queue.filter((t) => !(t.task_id === msg.task_id && t.attempt === msg.attempt));
      forget(msg);
      break;
    case "open":
      openProof(msg).catch((e) => log(`task ${msg.task_id}: could not open its proof: ${e.message}`));
      break;
    case "verdict":
      forget(msg);
      if (msg.accepted) state.tasksVerified++;
      else state.tasksRejected++;
      log(`task ${msg.task_id}: ${msg.accepted ? "verified" : `rejected (${msg.reason})`}`);
      break;
    case "error":
      log(`coordinator: ${msg.code}: ${msg.message}`);
      break;
  }
  show();
}

/** Consecutive failed tasks after which the tab drops to the next backend tier and registers again. */
const FAILURES_BEFORE_FALLBACK = 3;

/** The next tier down, after the current one kept failing (a lost context, a driver fault). */
async function downgrade() {
  const next = state.backend.tier === "webgpu" ? await webgl2().catch(() => null) : null;
  state.backend = next ?? cpu();
  state.failures = 0;
  log(`backend failing; now ${state.backend.tier} (${state.backend.adapter})`);
  // Register again so the coordinator shows (and attests) the new tier.
  if (state.ws) state.ws.close();
}

// ---- inference (the engine in a Web Worker) ----
let nextCall = 0;
const calls = new Map();

/** Asks the inference worker for `op`; resolves with its reply (or rejects with its error). */
function infer(op, args = {}, transfer = []) {
  const id = ++nextCall;
  return new Promise((resolve, reject) => {
    calls.set(id, { resolve, reject });
    state.inference.postMessage({ id, op, ...args }, transfer);
  });
}

function startInference() {
  state.inference = new Worker("/static/infer-worker.js");
  state.inference.onmessage = (e) => {
    const call = calls.get(e.data.id);
    calls.delete(e.data.id);
    if (e.data.ok) call?.resolve(e.data);
    else call?.reject(new Error(e.data.error));
  };
}

/** Downloads, checks and loads the models asked for (`all`, or names): claimed at the next registration. */
async function loadModels(wanted) {
  if (!state.inference) startInference();
  const listed = (await (await fetch("/v1/models")).json()).data.map((m) => m.id);
  const names = wanted === "all" ? listed : wanted.split(",").filter((n) => listed.includes(n));
  for (const name of names) {
    if (state.models.includes(name)) continue;
    log(`loading ${name}…`);
    const started = performance.now();
    const manifest = await (await fetch(`/v1/models/${encodeURIComponent(name)}/files`)).json();
    const reply = await infer("load", { model: name, files: manifest.files });
    state.models = reply.models;
    log(`${name} loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
  $("models-served").textContent = state.models.length ? state.models.join(", ") : "none";
}

/** The task's request as the engine reads it: the seed back to an exact JSON integer (parseJson quoted it). */
function requestJson(request) {
  return JSON.stringify(request).replace(/"seed":"(\d+)"/g, '"seed":$1');
}

async function runInference(task) {
  const { model, request } = task.work;
  const reply = await infer("answer", { model, task_id: task.task_id, attempt: task.attempt, request: requestJson(request) });
  return reply.bytes;
}

/** Uploads `bytes` as a blob, signed (a node's uploads are bound to an attempt it holds): its hash. */
async function upload(bytes, hash = blake3Hex(bytes)) {
  const path = `/v1/blobs/${hash}`;
  const headers = await signRequest(state.identity, "PUT", path, bytes, hash);
  const put = await fetch(path, { method: "PUT", body: bytes, headers });
  if (!put.ok) throw new Error(`upload refused: ${put.status} ${await put.text()}`);
  return hash;
}

/** The coordinator's challenge of an answered inference: the opening at its seed, uploaded and announced. */
async function openProof(msg) {
  const ids = { task_id: msg.task_id, attempt: msg.attempt };
  const reply = await infer("open", { ...ids, seed: msg.seed });
  // Hashed by the engine in the worker: megabytes through the page's JavaScript BLAKE3 would stall its heartbeats.
  const opening_hash = await upload(reply.bytes, reply.hash);
  log(`task ${msg.task_id}: proof opened (${reply.bytes.length} bytes)`);
  await send({ type: "opened", ...ids, opening_hash });
}

function forget(msg) {
  if (state.inference) infer("forget", { task_id: msg.task_id, attempt: msg.attempt }).catch(() => {});
}

/** A small result rides in one signed deliver frame (its commitment and bytes together); a large one is committed,
 * uploaded as a blob and announced. */
async function deliver(task, result) {
  const hash = blake3Hex(result);
  const ids = { task_id: task.task_id, attempt: task.attempt };
  if (result.byteLength <= INLINE_RESULT_BYTES) {
    await send({ type: "deliver", results: [{ ...ids, result_hash: hash, data: toBase64(result) }], failed: [] });
    return;
  }
  await send({ type: "commit", ...ids, result_hash: hash });
  await upload(result, hash);
  await send({ type: "result", ...ids, result_hash: hash });
}

/** Runs queued tasks one at a time, resting between them to keep to the duty cycle. */
async function work() {
  if (state.working) return;
  state.working = true;
  try {
    while (state.queue.length > 0 && state.running) {
      const task = state.queue.shift();
      const started = performance.now();
      try {
        let result = task.work.kind === "infer" ? await runInference(task) : await state.backend.run(task.work);
        if (params.get("cheat") === "1" && result.length > 3) {
          // Test variant: a forged result (one exponent bit of the first value), committed like an honest one.
          result = result.slice();
          result[3] ^= 0x40;
        }
        await deliver(task, result);
        state.tasksDone++;
        state.failures = 0;
      } catch (e) {
        log(`task ${task.task_id} failed: ${e.message}`);
        await send({ type: "failed", task_id: task.task_id, attempt: task.attempt, reason: String(e.message).slice(0, 200) });
        state.failures = (state.failures ?? 0) + 1;
        if (state.failures >= FAILURES_BEFORE_FALLBACK && state.backend.tier !== "cpu" && task.work.kind === "matmul") {
          await downgrade();
        }
      }
      const busy = performance.now() - started;
      state.busyMs += busy;
      show();
      const duty = Math.min(1, Math.max(0.05, Number($("duty").value) / 100));
      if (duty < 1) await new Promise((r) => setTimeout(r, (busy * (1 - duty)) / duty));
    }
  } finally {
    state.working = false;
  }
}

export async function start() {
  state.wanted = true;
  if (state.running) return;
  if ($("visible-only").checked && document.visibilityState !== "visible") {
    log("waiting for the page to be visible");
    show();
    return;
  }
  state.running = true;
  state.startedMs = performance.now();
  show();
  const wanted = params.get("models") ?? ($("serve-models").checked ? "all" : null);
  if (wanted) {
    // Loaded before registering: a node claims only the models it can run now.
    try {
      await loadModels(wanted);
    } catch (e) {
      log(`cannot serve models: ${e.message}`);
    }
  }
  if (state.running) connect();
}

export function stop(keepWanted = false) {
  state.wanted = keepWanted;
  state.running = false;
  clearInterval(state.heartbeat);
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    send({ type: "goodbye" }).finally(() => state.ws.close());
  }
  show();
}

/// This node's own deposits and withdrawals, and where to deposit on each chain this coordinator keeps custody on.
async function refreshChains() {
  const id = state.identity.id;
  const [chains, deposits, withdrawals] = await Promise.all(
    ["/v1/chains", `/v1/accounts/${id}/deposits`, `/v1/accounts/${id}/withdrawals`].map((u) =>
      fetch(u).then((r) => r.json()),
    ),
  );
  const where = chains
    .filter((c) => c.deposit_address)
    .map((c) => `on ${c.chain} to ${c.deposit_address}`)
    .join("; ");
  if (where) $("deposit-how").textContent = `To add NLOV, send it ${where}, with ${id} as the memo or comment.`;
  activityRows($("chain-activity"), deposits, withdrawals, false);
}

async function refreshFromCoordinator() {
  if (!state.identity) return;
  try {
    const nodes = await (await fetch("/v1/nodes")).json();
    const me = nodes.find((n) => n.id === state.identity.id);
    if (me) {
      $("gflops").textContent = me.gflops_verified.toFixed(2);
      $("coordinator-state").textContent = me.state;
    }
    const acct = await (await fetch(`/v1/accounts/${state.identity.id}`)).json();
    $("earned").textContent = (Number(acct.balance_nano) / 1e9).toFixed(9).replace(/0+$/, "").replace(/\.$/, "");
    await refreshChains();
  } catch (e) {
    // The coordinator may be restarting; try again on the next tick.
  }
}

/**
 * Runs the page. `options.identity`: the node's identity when the embedding page has one (the Telegram Mini App's
 * account); otherwise this browser's own, kept in localStorage. `options.onChange(state)`: called on every redraw.
 */
export async function main(options = {}) {
  state.onChange = options.onChange ?? null;
  $("start").onclick = () => start();
  $("stop").onclick = () => stop();
  $("duty").oninput = () => ($("duty-value").textContent = `${$("duty").value}%`);
  document.addEventListener("visibilitychange", () => {
    if (!$("visible-only").checked) return;
    if (document.visibilityState === "visible" && state.wanted && !state.running) start();
    if (document.visibilityState !== "visible" && state.running) stop(true);
  });
  try {
    state.identity = options.identity ?? (await loadOrCreateIdentity());
    state.backend = await detect(params.get("backend"));
    log(`backend: ${state.backend.tier} (${state.backend.adapter})`);
  } catch (e) {
    log(`cannot provide: ${e.message}`);
    $("state").textContent = `unavailable: ${e.message}`;
    return;
  }
  show();
  setInterval(refreshFromCoordinator, 2000);
  if (params.get("autostart") === "1") start();
}
