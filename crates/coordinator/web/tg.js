// The Telegram Mini App (issue 15): the browser provider of /provide inside Telegram. It signs in with
// Telegram.WebApp.initData (the server checks it and hands back the user's custodial account key), then runs the same
// provider (provide.js: WebGPU → WebGL2 → CPU, duty cycle, paused while hidden — mobile webviews suspend background
// pages anyway). Telegram's MainButton starts and stops contributing; colours follow themeParams; the BackButton
// closes the key panel; haptics mark start and stop. A withdrawal is signed here, with the account's key.

import { main, start, stop } from "./provide.js";
import { importIdentity, signRequest } from "./neurolov.js";

const $ = (id) => document.getElementById(id);
const tg = window.Telegram?.WebApp;
/** The session survives a reload of the page: the same initData signs in only once. */
const SESSION_KEY = "neurolov-telegram-session";
const NANO = 1_000_000_000n;
/** What counts as earned: pay for verified work, and royalties (`/v1/accounts/{a}/transfers` codes). */
const EARNINGS = new Set(["task payment", "verification payment", "model royalty"]);
const EARNINGS_POLL_MS = 5000;

/** Sums the account's earnings over its recent history (the newest 1,000 transfers). */
async function refreshEarnings(account) {
  try {
    const history = await (await fetch(`/v1/accounts/${account}/transfers?limit=1000`)).json();
    const nano = history
      .filter((t) => t.direction === "in" && EARNINGS.has(t.code))
      .reduce((sum, t) => sum + BigInt(t.amount_nano), 0n);
    $("earned-total").textContent = (Number(nano) / 1e9).toFixed(9).replace(/0+$/, "").replace(/\.$/, "");
  } catch (e) {
    // The coordinator may be restarting: the next poll tries again.
  }
}

function applyTheme() {
  const root = document.documentElement.style;
  for (const [key, value] of Object.entries(tg.themeParams ?? {})) {
    root.setProperty(`--tg-theme-${key.replace(/_/g, "-")}`, value);
  }
  document.documentElement.dataset.theme = tg.colorScheme ?? "light";
}

function applyViewport() {
  if (tg.viewportStableHeight) {
    document.documentElement.style.setProperty("--tg-viewport-stable-height", `${tg.viewportStableHeight}px`);
  }
}

async function signIn() {
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) return JSON.parse(saved);
  const reply = await fetch("/v1/telegram/session", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ init_data: tg.initData }),
  });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error ?? `sign-in answered ${reply.status}`);
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(body));
  return body;
}

/** Parses "1.5" into nano-NLOV (9 decimals), or null. */
function nano(text) {
  const m = /^\s*(\d+)(?:\.(\d{1,9}))?\s*$/.exec(text);
  if (!m) return null;
  return BigInt(m[1]) * NANO + BigInt((m[2] ?? "").padEnd(9, "0"));
}

async function withdraw(identity, event) {
  event.preventDefault();
  const amount = nano($("withdraw-amount").value);
  const out = $("withdraw-result");
  if (amount === null || amount === 0n) {
    out.textContent = "the amount is a number of NLOV, e.g. 1.5";
    return;
  }
  const body = JSON.stringify({
    chain: $("withdraw-chain").value,
    to: $("withdraw-to").value.trim(),
    amount_nano: Number(amount),
    id: Math.floor(Math.random() * 2 ** 52),
  });
  const bytes = new TextEncoder().encode(body);
  const headers = await signRequest(identity, "POST", "/v1/wallet/withdraw", bytes);
  const reply = await fetch("/v1/wallet/withdraw", {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: bytes,
  });
  const result = await reply.json();
  out.textContent = reply.ok ? `withdrawal ${result.state} (fee ${Number(result.fee_nano) / 1e9} NLOV)` : result.error;
  tg.HapticFeedback?.notificationOccurred(reply.ok ? "success" : "error");
}

/** The key as a Solana CLI keypair file: [seed…, public…]. */
function keyFile(session) {
  const bytes = (b64) => Array.from(atob(b64.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  return JSON.stringify([...bytes(session.secret_key_base64url), ...bytes(session.public_key_base64url)]);
}

function setUpKeyPanel(session) {
  const close = () => {
    $("key").hidden = true;
    tg.BackButton?.hide();
  };
  $("show-key").onclick = () => {
    $("key").textContent = keyFile(session);
    $("key").hidden = false;
    tg.BackButton?.show();
  };
  tg.BackButton?.onClick(close);
}

function mainButton(state) {
  const button = tg.MainButton;
  if (!button) return;
  button.setText(state.wanted ? "Stop contributing" : "Start contributing");
  button.show();
  document.body.dataset.contributing = String(state.wanted);
}

async function run() {
  if (!tg || !tg.initData) {
    $("who").textContent = "Open this page from the Neurolov bot in Telegram.";
    return;
  }
  document.body.classList.add("tg");
  tg.ready();
  tg.expand();
  applyTheme();
  applyViewport();
  tg.onEvent?.("themeChanged", applyTheme);
  tg.onEvent?.("viewportChanged", applyViewport);
  let session;
  try {
    session = await signIn();
  } catch (e) {
    $("who").textContent = `cannot sign in: ${e.message}`;
    return;
  }
  $("who").textContent = `Signed in as ${session.first_name}.`;
  document.body.dataset.account = session.account;
  const identity = await importIdentity(session.secret_key_base64url, session.public_key_base64url);
  setUpKeyPanel(session);
  $("withdraw").onsubmit = (event) => withdraw(identity, event).catch((e) => ($("withdraw-result").textContent = e.message));
  let wanted = false;
  tg.MainButton?.onClick(() => {
    tg.HapticFeedback?.impactOccurred("medium");
    if (wanted) stop();
    else start();
  });
  setInterval(() => refreshEarnings(session.account), EARNINGS_POLL_MS);
  await main({
    identity,
    onChange: (state) => {
      wanted = state.wanted;
      mainButton(state);
    },
  });
}

run();
