// The browser provider's inference engine, in a Web Worker so a long generation never stalls the page's session
// (heartbeats, frames). The engine is `crates/wasm`: the native node's model and proof code compiled to WebAssembly,
// served by the coordinator at /static/engine.wasm. Messages in: {id, op: "load"|"answer"|"open"|"forget", ...};
// out: {id, ok, bytes?, hash?, models?, error?}. Model files are fetched by hash and checked by the engine before they run.

let engine = null;

async function instantiate() {
  let memory = null;
  const imports = {
    neurolov: {
      // getrandom's entropy (tokenizers' hash seeds); getRandomValues fills at most 65,536 bytes at a time.
      random_fill(ptr, len) {
        for (let off = 0; off < len; off += 65536) {
          crypto.getRandomValues(new Uint8Array(memory.buffer, ptr + off, Math.min(65536, len - off)));
        }
      },
    },
  };
  const response = await fetch("/static/engine.wasm");
  if (!response.ok) throw new Error(`no inference engine here: ${response.status} ${await response.text()}`);
  const { instance } = await WebAssembly.instantiate(await response.arrayBuffer(), imports);
  memory = instance.exports.memory;
  return instance.exports;
}

const encoder = new TextEncoder();

/** Copies `bytes` into a buffer the engine allocated (the call it is passed to takes it): [pointer, length]. */
function put(bytes) {
  const u8 = typeof bytes === "string" ? encoder.encode(bytes) : new Uint8Array(bytes);
  const ptr = engine.nl_alloc(u8.length);
  new Uint8Array(engine.memory.buffer, ptr, u8.length).set(u8);
  return [ptr, u8.length];
}

/** The last call's output as lowercase hex BLAKE3 (computed by the engine: megabytes hash in milliseconds there). */
function outputHash() {
  const hash = new Uint8Array(engine.memory.buffer, engine.nl_out_blake3(), 32);
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The last call's output: its bytes, or its error thrown. */
function output(code) {
  const bytes = new Uint8Array(engine.memory.buffer, engine.nl_out_ptr(), engine.nl_out_len()).slice();
  if (code !== 0) throw new Error(new TextDecoder().decode(bytes));
  return bytes;
}

const loaded = [];

/** Fetches a model's files by hash, stages each (the engine checks its BLAKE3 against the manifest), loads it. */
async function load(model, files) {
  for (const f of files) {
    const response = await fetch(`/v1/blobs/${f.blake3}`);
    if (!response.ok) throw new Error(`${model}/${f.name}: ${response.status}`);
    const bytes = await response.arrayBuffer();
    output(engine.nl_stage(...put(f.name), ...put(bytes), ...put(f.blake3)));
  }
  output(engine.nl_load(...put(model)));
  if (!loaded.includes(model)) loaded.push(model);
  return loaded.slice();
}

async function handle(msg) {
  engine ??= await instantiate();
  switch (msg.op) {
    case "load":
      return { models: await load(msg.model, msg.files) };
    case "answer": {
      const code = engine.nl_answer(...put(msg.model), BigInt(msg.task_id), msg.attempt, ...put(msg.request));
      return { bytes: output(code) };
    }
    case "open": {
      const bytes = output(engine.nl_open(BigInt(msg.task_id), msg.attempt, BigInt(msg.seed)));
      return { bytes, hash: outputHash() };
    }
    case "forget":
      engine.nl_forget(BigInt(msg.task_id), msg.attempt);
      return {};
    default:
      throw new Error(`unknown operation ${msg.op}`);
  }
}

// One message at a time, in order: the engine holds one model context per model and runs one request at a time.
let chain = Promise.resolve();
self.onmessage = (e) => {
  const msg = e.data;
  chain = chain.then(async () => {
    try {
      const reply = await handle(msg);
      self.postMessage({ id: msg.id, ok: true, ...reply }, reply.bytes ? [reply.bytes.buffer] : []);
    } catch (err) {
      self.postMessage({ id: msg.id, ok: false, error: String(err.message ?? err) });
    }
  });
};
