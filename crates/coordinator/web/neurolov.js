// Neurolov's browser library: what a browser node needs to speak the node protocol (docs/PROTOCOL.md) with no
// build step and no third-party code: base58, BLAKE3 (content addresses and result commitments), the protocol's
// seeded input generator, ed25519 identities through WebCrypto, signed envelopes, and JSON with exact u64s.

export const DOMAIN_NODE = "neurolov/node-message/v1";
export const DOMAIN_REQUEST = "neurolov/client-request/v1";

// ---- base58 (Bitcoin alphabet), as Solana addresses ----
const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

export function base58(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = "1" + out;
  }
  return out;
}

// ---- BLAKE3 (hash mode, 32-byte output), after the reference implementation ----
const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;

function g(s, a, b, c, d, x, y) {
  s[a] = (s[a] + s[b] + x) | 0;
  s[d] ^= s[a]; s[d] = (s[d] >>> 16) | (s[d] << 16);
  s[c] = (s[c] + s[d]) | 0;
  s[b] ^= s[c]; s[b] = (s[b] >>> 12) | (s[b] << 20);
  s[a] = (s[a] + s[b] + y) | 0;
  s[d] ^= s[a]; s[d] = (s[d] >>> 8) | (s[d] << 24);
  s[c] = (s[c] + s[d]) | 0;
  s[b] ^= s[c]; s[b] = (s[b] >>> 7) | (s[b] << 25);
}

// The 16-word state after compressing one 64-byte block (words `m`) into chaining value `cv`.
function compress(cv, m, counter, len, flags) {
  const s = new Uint32Array(16);
  s.set(cv, 0);
  s.set(IV.subarray(0, 4), 8);
  s[12] = counter % 0x100000000;
  s[13] = Math.floor(counter / 0x100000000);
  s[14] = len;
  s[15] = flags;
  let w = Uint32Array.from(m);
  for (let r = 0; r < 7; r++) {
    g(s, 0, 4, 8, 12, w[0], w[1]); g(s, 1, 5, 9, 13, w[2], w[3]);
    g(s, 2, 6, 10, 14, w[4], w[5]); g(s, 3, 7, 11, 15, w[6], w[7]);
    g(s, 0, 5, 10, 15, w[8], w[9]); g(s, 1, 6, 11, 12, w[10], w[11]);
    g(s, 2, 7, 8, 13, w[12], w[13]); g(s, 3, 4, 9, 14, w[14], w[15]);
    if (r < 6) w = Uint32Array.from(PERM, (p) => w[p]);
  }
  for (let i = 0; i < 8; i++) {
    s[i] ^= s[i + 8];
    s[i + 8] ^= cv[i];
  }
  return s;
}

function words(bytes, offset, len) {
  const block = new Uint8Array(64);
  block.set(bytes.subarray(offset, offset + len));
  const dv = new DataView(block.buffer);
  return Uint32Array.from({ length: 16 }, (_, i) => dv.getUint32(4 * i, true));
}

// An "output": what compresses into either a chaining value or, with ROOT, the hash.
function chunkOutput(bytes, chunk) {
  const start = chunk * 1024;
  const end = Math.min(bytes.length, start + 1024);
  const blocks = Math.max(1, Math.ceil((end - start) / 64));
  let cv = IV;
  for (let b = 0; b < blocks; b++) {
    const off = start + 64 * b;
    const len = Math.min(64, end - off);
    const flags = (b === 0 ? CHUNK_START : 0) | (b === blocks - 1 ? CHUNK_END : 0);
    if (b === blocks - 1) return { cv, m: words(bytes, off, Math.max(0, len)), counter: chunk, len: Math.max(0, len), flags };
    cv = compress(cv, words(bytes, off, len), chunk, len, flags).subarray(0, 8);
  }
  throw new Error("unreachable");
}

function parentOutput(left, right) {
  const m = new Uint32Array(16);
  m.set(left, 0);
  m.set(right, 8);
  return { cv: IV, m, counter: 0, len: 64, flags: PARENT };
}

const chainingValue = (o) => compress(o.cv, o.m, o.counter, o.len, o.flags).subarray(0, 8);

/** BLAKE3 of `bytes` (Uint8Array) as lowercase hex. */
export function blake3Hex(bytes) {
  const chunks = Math.max(1, Math.ceil(bytes.length / 1024));
  const stack = [];
  for (let c = 0; c < chunks - 1; c++) {
    let cv = chainingValue(chunkOutput(bytes, c));
    let total = c + 1;
    while ((total & 1) === 0) {
      cv = chainingValue(parentOutput(stack.pop(), cv));
      total >>= 1;
    }
    stack.push(cv);
  }
  let out = chunkOutput(bytes, chunks - 1);
  while (stack.length > 0) out = parentOutput(stack.pop(), chainingValue(out));
  const root = compress(out.cv, out.m, out.counter, out.len, out.flags | ROOT);
  let hex = "";
  for (let i = 0; i < 8; i++) {
    for (let j = 0; j < 4; j++) hex += ((root[i] >>> (8 * j)) & 0xff).toString(16).padStart(2, "0");
  }
  return hex;
}

// ---- the protocol's seeded generator (Mulberry32), bit for bit ----
// `offset` values of the stream are skipped (protocol version 3: a row block of a seeded matrix): the state advances
// by a constant per value, so the block starts from state0 + offset * 0x6d2b79f5 (mod 2^32).
export function seeded(seed, len, offset = 0) {
  seed = BigInt(seed);
  const s0 = (Number(seed & 0xffffffffn) ^ Number((seed >> 32n) & 0xffffffffn)) >>> 0;
  let s = Number((BigInt(s0) + BigInt(offset) * 0x6d2b79f5n) & 0xffffffffn);
  const out = new Float32Array(len);
  for (let i = 0; i < len; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const x = (t ^ (t >>> 14)) >>> 0;
    out[i] = ((x >>> 8) / 16777216) * 2 - 1;
  }
  return out;
}

// ---- JSON with exact u64 (seeds are full 64-bit) ----
// Seeds are quoted before parsing, so they reach `seeded` as exact decimal strings whatever the JSON parser does
// with large numbers; other integers in the protocol (task ids, sizes, times) stay far below 2^53.
export function parseJson(text) {
  return JSON.parse(text.replace(/"seed":\s*(\d+)/g, '"seed":"$1"'));
}

// ---- ed25519 identity through WebCrypto, kept in this browser ----
const KEY_STORE = "neurolov-node-key";

export async function loadOrCreateIdentity(storage = localStorage) {
  if (!crypto.subtle) throw new Error("WebCrypto is not available (a secure context is needed)");
  const saved = storage.getItem(KEY_STORE);
  let privateKey, publicRaw;
  if (saved) {
    const { jwk, pub } = JSON.parse(saved);
    privateKey = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, true, ["sign"]);
    publicRaw = Uint8Array.from(pub);
  } else {
    let pair;
    try {
      pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    } catch (e) {
      throw new Error(`this browser has no WebCrypto Ed25519 (${e.message})`);
    }
    privateKey = pair.privateKey;
    publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const jwk = await crypto.subtle.exportKey("jwk", privateKey);
    storage.setItem(KEY_STORE, JSON.stringify({ jwk, pub: Array.from(publicRaw) }));
  }
  return { privateKey, publicRaw, id: base58(publicRaw) };
}

/** An identity from a 32-byte ed25519 seed and its public key, both base64url (the Telegram Mini App's account). */
export async function importIdentity(seedBase64url, publicBase64url) {
  const jwk = { kty: "OKP", crv: "Ed25519", d: seedBase64url, x: publicBase64url, ext: true };
  const privateKey = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, true, ["sign"]);
  const publicRaw = fromBase64(publicBase64url.replace(/-/g, "+").replace(/_/g, "/"));
  return { privateKey, publicRaw, id: base58(publicRaw) };
}

/** The signed bytes: u16le(len(domain)) ‖ domain ‖ message. */
function domainSeparated(domain, message) {
  const d = new TextEncoder().encode(domain);
  const out = new Uint8Array(2 + d.length + message.length);
  out[0] = d.length & 0xff;
  out[1] = d.length >> 8;
  out.set(d, 2);
  out.set(message, 2 + d.length);
  return out;
}

/**
 * Headers that sign an HTTP request (docs/API.md): `METHOD \n PATH \n TIMESTAMP_MS \n blake3(body)` in the
 * request domain. A node signs its result uploads this way. `bodyHash`: the body's BLAKE3 when it is already known.
 */
export async function signRequest(identity, method, path, body, bodyHash = blake3Hex(body)) {
  const ts = Date.now();
  const message = new TextEncoder().encode(`${method}\n${path}\n${ts}\n${bodyHash}`);
  const bytes = domainSeparated(DOMAIN_REQUEST, message);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, identity.privateKey, bytes));
  return { "x-neurolov-client": identity.id, "x-neurolov-timestamp": String(ts), "x-neurolov-signature": base58(sig) };
}

/** A signed envelope around `message` (an object), as the coordinator expects every node frame. */
export async function seal(identity, message) {
  const payload = JSON.stringify(message, (k, v) => (typeof v === "bigint" ? Number(v) : v));
  const bytes = domainSeparated(DOMAIN_NODE, new TextEncoder().encode(payload));
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, identity.privateKey, bytes));
  return JSON.stringify({ signer: identity.id, payload, signature: base58(sig) });
}

// ---- base64 (protocol version 2's inline inputs and results) ----
export function toBase64(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer ?? bytes, bytes.byteOffset ?? 0, bytes.byteLength);
  let bin = "";
  for (let i = 0; i < u8.length; i += 0x8000) bin += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function fromBase64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
