// The browser provider's compute tiers, best first: WebGPU (the same WGSL kernels native nodes run, fetched from the
// coordinator), WebGL2 (a fragment-shader GEMM, its GLSL served from the kernels crate too), and the CPU in a Web
// Worker. Each tier checks its own matmul results (Freivalds, with the coordinator's tolerance parameters) before the
// tab commits to them. provide.js runs the session and the page; this file only computes.

import { fromBase64, seeded } from "./neurolov.js";

/** Where the tiers report what happens to them (the page's log, once provide.js sets it). */
let log = (msg) => console.log(msg);

export function useLog(fn) {
  log = fn;
}

// ---- data ----
async function floats(ref) {
  if (ref.from === "seeded") return seeded(ref.seed, Number(ref.len), Number(ref.offset ?? 0));
  return new Float32Array(await bytes(ref));
}

async function bytes(ref) {
  if (ref.from === "seeded") return seeded(ref.seed, Number(ref.len), Number(ref.offset ?? 0)).buffer;
  if (ref.from === "inline") return fromBase64(ref.data).buffer;
  const resp = await fetch(`/v1/blobs/${ref.hash}`);
  if (!resp.ok) throw new Error(`blob ${ref.hash}: ${resp.status}`);
  return await resp.arrayBuffer();
}

// ---- backends ----
async function webgpu() {
  if (!navigator.gpu) return null;
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return null;
  const device = await adapter.requestDevice();
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "WebGPU adapter";
  const source = await (await fetch("/v1/kernels/matmul.wgsl")).text();
  const matmul = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code: source }), entryPoint: "main" },
  });
  const storage = (data, extra = 0) => {
    const buf = device.createBuffer({
      size: Math.max(4, Math.ceil(data.byteLength / 4) * 4),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | extra,
    });
    device.queue.writeBuffer(buf, 0, data);
    return buf;
  };
  async function readBack(buffers) {
    const total = buffers.reduce((s, b) => s + b.size, 0);
    const staging = device.createBuffer({ size: total, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    let at = 0;
    for (const b of buffers) {
      enc.copyBufferToBuffer(b, 0, staging, at, b.size);
      at += b.size;
    }
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Uint8Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    return out;
  }
  async function runMatmul(m, n, k, a, b) {
    const dims = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(dims, 0, new Uint32Array([m, n, k, 0]));
    const ba = storage(a), bb = storage(b);
    const bc = device.createBuffer({ size: Math.max(4, m * n * 4), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const group = device.createBindGroup({
      layout: matmul.getBindGroupLayout(0),
      entries: [dims, ba, bb, bc].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(matmul);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(Math.ceil(n / 64), Math.ceil(m / 64));
    pass.end();
    device.queue.submit([enc.finish()]);
    const out = (await readBack([bc])).slice(0, m * n * 4);
    for (const x of [dims, ba, bb, bc]) x.destroy();
    return out;
  }
  async function runWgsl(work) {
    const code = new TextDecoder().decode(await bytes(work.source));
    device.pushErrorScope("validation");
    const pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module: device.createShaderModule({ code }), entryPoint: work.entry_point },
    });
    const buffers = [];
    for (const b of [...work.buffers].sort((x, y) => x.binding - y.binding)) {
      const size = Math.max(4, Math.ceil(Number(b.size_bytes) / 4) * 4);
      const usage =
        b.access === "uniform" ? GPUBufferUsage.UNIFORM : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC;
      const buf = device.createBuffer({ size, usage: usage | GPUBufferUsage.COPY_DST });
      if (b.init) device.queue.writeBuffer(buf, 0, new Uint8Array(await bytes(b.init)));
      buffers.push({ spec: b, buf });
    }
    const group = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: buffers.map(({ spec, buf }) => ({ binding: spec.binding, resource: { buffer: buf } })),
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...work.dispatch);
    pass.end();
    device.queue.submit([enc.finish()]);
    const err = await device.popErrorScope();
    if (err) throw new Error(`kernel refused: ${err.message}`);
    const outs = buffers.filter(({ spec }) => spec.access === "read_write");
    const raw = await readBack(outs.map((o) => o.buf));
    // Each output is exactly its declared size (buffers were rounded up to whole words).
    const parts = [];
    let at = 0;
    for (const o of outs) {
      parts.push(raw.slice(at, at + Number(o.spec.size_bytes)));
      at += o.buf.size;
    }
    for (const { buf } of buffers) buf.destroy();
    return concat(parts);
  }
  return {
    tier: "webgpu",
    adapter: name,
    software: info.architecture === "swiftshader" || adapter.isFallbackAdapter === true,
    run: (work) => (work.kind === "matmul" ? matmulTask(work, runMatmul) : runWgsl(work)),
  };
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The tolerance's parameters, from the coordinator (`GET /v1/verification`, taken from crates/verify/src/freivalds.rs):
 * fp32 and f64 unit roundoffs, the false-reject probability, the checker's slack, the flush threshold, and the
 * self-check's rounds and margin (its share of the coordinator's tight tolerance: stricter, so a result the tab
 * passes, the coordinator passes too, while an honest fp32 result — at most ~0.14 of that tolerance — still passes).
 */
let verification = null;

async function loadVerification() {
  if (verification) return verification;
  const r = await fetch("/v1/verification");
  if (!r.ok) throw new Error(`verification parameters: ${r.status}`);
  verification = await r.json();
  return verification;
}

async function matmulTask(work, run) {
  await loadVerification();
  const [m, n, k] = [Number(work.m), Number(work.n), Number(work.k)];
  const [a, b] = await Promise.all([floats(work.a), floats(work.b)]);
  const out = await run(m, n, k, a, b);
  // A node commits only to what it computed. A lost context or a driver fault (zeros, garbage, one bad row) becomes
  // a `failed` task here instead of a signed wrong result, which the coordinator would treat as fraud.
  selfCheck(m, n, k, a, b, new Float32Array(out.buffer, out.byteOffset, m * n));
  return out;
}

/**
 * Freivalds' check of C = A·B in f64 with random vectors only this tab knows, O(mk + kn + mn) per round: the
 * coordinator's tight tolerance (crates/verify/src/freivalds.rs, whose module doc derives it), without its exact
 * entries. Column j of B is weighted by w_j = 1/‖b_j‖₂ and row i passes a round when
 * |C·R' − A·(B·R')|_i ≤ margin · t_i, R' = W·R, with
 *   t_i = z·u·(1 + K·u)·√V_i + F_i + ε_i,   z = √(2·ln(2·m·rounds/2⁻⁴⁰)),   u = 2⁻²⁴,
 *   V_i = (K/3)·Σ_j w_j²·c_ij² + (K/2 + 2)·Σ_k a_ik²·β_k,   β_k = Σ_j b_kj²·w_j²,
 * F_i the allowance for subnormals a GPU flushes to zero, ε_i the f64 rounding of this check. A zero column of B must
 * give exact zeros.
 */
function selfCheck(m, n, k, a, b, c) {
  const tol = verification;
  const [rounds, margin, flushBelow] = [tol.self_check_rounds, tol.self_check_margin, tol.flush_below];
  const u = tol.unit_roundoff;
  const ku = k * u;
  const gamma = ku / (1 - ku);
  const z = Math.sqrt(2 * Math.log((2 * m * rounds) / 2 ** tol.false_reject_log2));
  const factor = z * u * (1 + ku) * (1 + tol.checker_slack);
  const subnormal = (x) => x !== 0 && Math.abs(x) < flushBelow;
  const fail = (i, why) => {
    throw new Error(`self-check failed at row ${i}: ${why}`);
  };
  // Column weights w_j, then per row of B: β_k, ρ_k = Σ_j |b_kj|·w_j and ρ_k over B's subnormal entries (ρ^sub).
  const w = new Float64Array(n);
  for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) w[j] += b[p * n + j] * b[p * n + j];
  let wSum = 0;
  for (let j = 0; j < n; j++) {
    w[j] = w[j] > 0 ? 1 / Math.sqrt(w[j]) : 0;
    wSum += w[j];
  }
  const beta = new Float64Array(k), rho = new Float64Array(k);
  let rhoSum = 0, rhoSub2 = 0;
  for (let p = 0; p < k; p++) {
    let sub = 0;
    for (let j = 0; j < n; j++) {
      const x = b[p * n + j], aw = Math.abs(x) * w[j];
      beta[p] += aw * aw;
      rho[p] += aw;
      if (subnormal(x)) sub += aw;
    }
    rhoSum += rho[p];
    rhoSub2 += sub * sub;
  }
  // Flushed subnormals of A (each below 2⁻¹²⁶), flushed products and sums.
  const flushAll = flushBelow * rhoSum + 2 * k * flushBelow * (1 + gamma) * wSum;
  // Per row of A and C: the tolerance t_i (times the margin).
  const t = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    let a2 = 0, aBeta = 0, aRho = 0;
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      a2 += x * x;
      aBeta += x * x * beta[p];
      aRho += Math.abs(x) * rho[p];
    }
    let c2w2 = 0, cw = 0;
    for (let j = 0; j < n; j++) {
      const x = c[i * n + j];
      if (!Number.isFinite(x)) fail(i, "not finite");
      if (w[j] === 0 && x !== 0) fail(i, `column ${j} of B is zero but C is not`);
      c2w2 += x * x * w[j] * w[j];
      cw += Math.abs(x) * w[j];
    }
    const v = (k / 3) * c2w2 + (k / 2 + 2) * aBeta;
    const flush = Math.sqrt(a2 * rhoSub2) + flushAll;
    const verifier = 1.01 * tol.checker_unit_roundoff * ((k + n + 2) * aRho + (n + 1) * cw);
    t[i] = margin * (factor * Math.sqrt(v) + flush + verifier) + Number.MIN_VALUE;
  }
  const r = new Float64Array(n), br = new Float64Array(k);
  for (let round = 0; round < rounds; round++) {
    for (let j = 0; j < n; j++) r[j] = w[j] * (Math.random() * 2 - 1);
    for (let p = 0; p < k; p++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += b[p * n + j] * r[j];
      br[p] = s;
    }
    for (let i = 0; i < m; i++) {
      let cr = 0, abr = 0;
      for (let j = 0; j < n; j++) cr += c[i * n + j] * r[j];
      for (let p = 0; p < k; p++) abr += a[i * k + p] * br[p];
      // `!(x <= t)` also fails NaN.
      if (!(Math.abs(cr - abr) <= t[i])) fail(i, `off by ${(Math.abs(cr - abr) / t[i]).toExponential(2)}× the tolerance`);
    }
  }
}

/** The WebGL2 tier's shaders, served by the coordinator from the kernels crate beside the WGSL (one copy of each). */
let glsl = null;

async function loadGlsl() {
  if (glsl) return glsl;
  const text = async (name) => {
    const r = await fetch(`/v1/kernels/${name}`);
    if (!r.ok) throw new Error(`kernel ${name}: ${r.status}`);
    return r.text();
  };
  const [vs, fs] = await Promise.all([text("matmul.vert"), text("matmul.frag")]);
  glsl = { vs, fs };
  return glsl;
}

/** A WebGL2 context with the GEMM program, or null where WebGL2 or float render targets are missing. */
function webglContext() {
  const canvas = document.createElement("canvas");
  const gl = canvas.getContext("webgl2");
  if (!gl || !gl.getExtension("EXT_color_buffer_float")) return null;
  const { vs, fs } = glsl;
  const compile = (type, src) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s) ?? "shader refused");
    return s;
  };
  const prog = gl.createProgram();
  gl.attachShader(prog, compile(gl.VERTEX_SHADER, vs));
  gl.attachShader(prog, compile(gl.FRAGMENT_SHADER, fs));
  gl.linkProgram(prog);
  const quad = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, quad);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
  return { gl, prog, quad, maxTex: gl.getParameter(gl.MAX_TEXTURE_SIZE), renderer: String(gl.getParameter(gl.RENDERER)) };
}

export async function webgl2() {
  await loadGlsl();
  let ctx = webglContext();
  if (!ctx) return null;
  function runMatmul(m, n, k, a, b) {
    // Software WebGL in a headless or starved browser can lose its context at any time (its GPU process restarts);
    // a fresh context usually works, so the tab rebuilds one before it gives up on this tier.
    if (ctx.gl.isContextLost()) {
      log("WebGL context lost; creating a new one");
      ctx = webglContext();
      if (!ctx) throw new Error("WebGL2 is gone");
    }
    const { gl, prog, quad, maxTex } = ctx;
    if (m > maxTex || n > maxTex || k > maxTex) throw new Error("matrix larger than a WebGL texture");
    const texture = (w, h, data) => {
      const t = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, w, h, 0, gl.RED, gl.FLOAT, data);
      return t;
    };
    const ta = texture(k, m, a), tb = texture(n, k, b), tc = texture(n, m, null);
    const fb = gl.createFramebuffer();
    try {
      gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
      gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tc, 0);
      gl.viewport(0, 0, n, m);
      gl.useProgram(prog);
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, ta);
      gl.uniform1i(gl.getUniformLocation(prog, "A"), 0);
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, tb);
      gl.uniform1i(gl.getUniformLocation(prog, "B"), 1);
      gl.uniform1i(gl.getUniformLocation(prog, "K"), k);
      const loc = gl.getAttribLocation(prog, "p");
      gl.bindBuffer(gl.ARRAY_BUFFER, quad);
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
      if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) throw new Error("framebuffer incomplete");
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      const rgba = new Float32Array(m * n * 4);
      gl.readPixels(0, 0, n, m, gl.RGBA, gl.FLOAT, rgba);
      const err = gl.getError();
      if (err !== gl.NO_ERROR || gl.isContextLost()) {
        throw new Error(`WebGL error ${err}${gl.isContextLost() ? " (context lost)" : ""}`);
      }
      const c = new Float32Array(m * n);
      for (let i = 0; i < m * n; i++) c[i] = rgba[4 * i];
      return new Uint8Array(c.buffer);
    } finally {
      for (const t of [ta, tb, tc]) gl.deleteTexture(t);
      gl.deleteFramebuffer(fb);
    }
  }
  return {
    tier: "webgl2",
    adapter: ctx.renderer,
    software: /swiftshader|llvmpipe/i.test(ctx.renderer),
    run: (work) => {
      if (work.kind !== "matmul") throw new Error("WGSL needs WebGPU");
      return matmulTask(work, async (m, n, k, a, b) => runMatmul(m, n, k, a, b));
    },
  };
}

export function cpu() {
  // The CPU tier runs in a Web Worker so the page stays responsive.
  const src = `onmessage = (e) => {
    const { m, n, k, a, b } = e.data;
    const c = new Float32Array(m * n);
    for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      if (x === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += x * b[p * n + j];
    }
    postMessage(c, [c.buffer]);
  };`;
  const worker = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
  const runMatmul = (m, n, k, a, b) =>
    new Promise((resolve) => {
      worker.onmessage = (e) => resolve(new Uint8Array(e.data.buffer));
      worker.postMessage({ m, n, k, a, b });
    });
  return {
    tier: "cpu",
    adapter: `${navigator.hardwareConcurrency ?? "?"} CPU threads`,
    software: true,
    run: (work) => {
      if (work.kind !== "matmul") throw new Error("WGSL needs WebGPU");
      return matmulTask(work, runMatmul);
    },
  };
}

/** The best tier this browser has, or the one `forced` names (`webgpu`, `webgl2`, `cpu`). */
export async function detect(forced) {
  if (!forced || forced === "webgpu") {
    try {
      const b = await webgpu();
      if (b) return b;
    } catch (e) {
      log(`WebGPU unusable: ${e.message}`);
    }
  }
  if (!forced || forced === "webgl2") {
    try {
      const b = await webgl2();
      if (b) return b;
    } catch (e) {
      log(`WebGL2 unusable: ${e.message}`);
    }
  }
  return cpu();
}
