"""Tokens/s and time to first token: Lienzo's streaming generation job vs a bare `model.generate`.

Both run the same random-weight GPT-2 (same weights, prompt, sampling settings and seed) in this
process, on the job runner's thread (where the app loads and runs models). Lienzo's path is the
real one: JobRunner -> generate_job -> text-reading thread + stopping criteria + stop-string scan
+ throttled progress. Target: Lienzo >= 0.95x the bare throughput.

    .venv/bin/python bench/text_generate.py                 # small config, CPU
    .venv/bin/python bench/text_generate.py --config gpt2   # GPT-2 124M-sized (for a GPU run)
    .venv/bin/python bench/text_generate.py --config my_config.json --device cuda

EOS is disabled on the model so both paths generate exactly --new-tokens tokens.
On a CPU shared with other work, use --threads 1: OpenMP teams of 2+ threads on an oversubscribed
CPU make every figure swing 2-10x from run to run, whichever path is measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, n_positions=512),
    "small": dict(n_layer=6, n_embd=512, n_head=8, n_positions=1024),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024),
    "gpt2-large": dict(n_layer=36, n_embd=1280, n_head=20, n_positions=1024),
}
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tiny_shakespeare_en.txt"


def build_model(folder: Path, config_arg: str, vocab: int) -> Path:
    """Save a random-weight GPT-2 with a byte-level BPE tokenizer trained here, offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    text = SHAKESPEARE.read_text(encoding="utf-8")[:400_000] if SHAKESPEARE.exists() else (
        "The quick brown fox jumps over the lazy dog. " * 2000)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    if config_arg in CONFIGS:
        cfg = dict(CONFIGS[config_arg])
    else:
        cfg = json.loads(Path(config_arg).read_text(encoding="utf-8"))
    cfg["vocab_size"] = len(fast)  # the model's vocabulary is the local tokenizer's
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**cfg, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)).save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help=f"one of {', '.join(CONFIGS)} or a GPT2Config JSON file")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    args = parser.parse_args()

    import torch

    from core.device import set_cpu_threads
    from core.jobs import JobRunner
    from core.models.cache import ModelCache, choose_device
    from core.text.generate import generate_job, sampling_kwargs
    from core.text.settings import GenerationSettings

    threads = set_cpu_threads(args.threads)
    device, dtype = choose_device(args.device)
    runner = JobRunner()

    def on_worker(fn):
        """Run fn on the job runner's thread, where the app runs all model work (one OpenMP team)."""
        job = runner.submit(lambda params, ctx: fn(), kind="bench", record=False)
        job.wait()
        if job.status != "done":
            raise SystemExit(f"bench job {job.status}: {job.error}")
        return job.result

    tmp = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    folder = build_model(Path(tmp.name) / "model", args.config, args.vocab)
    cache = ModelCache(device=device, dtype=dtype)
    entry = on_worker(lambda: cache.text_model(folder))
    build_s = time.perf_counter() - t0
    model, tok = entry.model, entry.tokenizer
    model.generation_config.eos_token_id = None  # both paths run the full length
    params_count = sum(p.numel() for p in model.parameters())
    words = SHAKESPEARE.read_text(encoding="utf-8")[:5000] if SHAKESPEARE.exists() else "The harbour at dawn " * 50
    prompt_ids = tok(words)["input_ids"][:args.prompt_tokens]
    prompt = tok.decode(prompt_ids)
    settings = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.8, top_p=0.95, top_k=50,
                                  repetition_penalty=1.1, seed=1234)
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)

    def bare(new_tokens: int, fresh_thread: bool = False) -> tuple[float, int, float]:
        kwargs = sampling_kwargs(GenerationSettings(**{**settings.to_dict(), "max_new_tokens": new_tokens}), tok)
        ids = torch.tensor([tok(prompt)["input_ids"]], device=device)
        box = {}

        def work():
            torch.set_num_threads(threads)
            torch.manual_seed(settings.seed)
            sync()
            start = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            sync()
            box["s"], box["n"] = time.perf_counter() - start, int(out.shape[1] - ids.shape[1])

        def beside_the_worker():
            # A second OpenMP team beside the worker's: how Lienzo generated until session 23.
            helper = threading.Thread(target=work)
            helper.start()
            helper.join()

        cpu = time.process_time()
        on_worker(beside_the_worker if fresh_thread else work)
        return box["s"], box["n"], time.process_time() - cpu

    def lienzo() -> tuple[float, int, float, float]:
        cpu = time.process_time()
        job = runner.submit(functools.partial(generate_job, cache=cache),
                            {"model": str(folder), "mode": "continue", "text": prompt,
                             "settings": settings.to_dict()}, kind="bench")
        job.wait()
        if job.status != "done":
            raise SystemExit(f"Lienzo job {job.status}: {job.error}")
        # The job's whole run, from start to end (prompt encoding, streaming, stop scan, progress).
        cpu = time.process_time() - cpu
        return job.finished_at - job.started_at, job.result["new_tokens"], job.result["first_token_s"], cpu

    bare(8), lienzo()  # warm-up: allocator, kernels, first-call imports
    bare_tps, lienzo_tps, bare_ttft, lienzo_ttft, bare_cpu, lienzo_cpu = [], [], [], [], [], []
    for _ in range(args.repeats):  # alternate so background load hits both alike
        seconds, n, cpu = bare(args.new_tokens)
        bare_tps.append(n / seconds)
        bare_cpu.append(n / cpu)
        seconds, n, first, cpu = lienzo()
        lienzo_tps.append(n / seconds)
        lienzo_cpu.append(n / cpu)
        lienzo_ttft.append(first)
        bare_ttft.append(bare(1)[0])  # a bare generate of one token is its time to first token
    fresh_tps = [n / seconds for seconds, n, _ in (bare(args.new_tokens, fresh_thread=True)
                                                   for _ in range(args.repeats))]
    runner.shutdown()
    tmp.cleanup()
    b, l = statistics.median(bare_tps), statistics.median(lienzo_tps)
    device_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {threads} threads"
    print(f"model: GPT-2 config '{args.config}', {params_count / 1e6:.1f}M parameters, random weights, "
          f"{device} {str(dtype).replace('torch.', '')} ({device_name}); built+loaded in {build_s:.1f}s")
    print(f"settings: prompt {len(prompt_ids)} tokens, {args.new_tokens} new tokens, sampling T=0.8 top-p 0.95 "
          f"top-k 50 rep 1.1, seed 1234, {args.repeats} repeats (median)")
    print(f"bare model.generate : {b:8.1f} tokens/s   first token {statistics.median(bare_ttft) * 1000:7.1f} ms")
    print(f"Lienzo streaming job: {l:8.1f} tokens/s   first token {statistics.median(lienzo_ttft) * 1000:7.1f} ms")
    print(f"(bare generate on a fresh thread beside the job thread: {statistics.median(fresh_tps):.1f} tokens/s, "
          f"{args.repeats} runs after the others)")
    # CPU seconds this process spent per token: unlike wall time, barely moved by other programs'
    # load, so it shows the streaming path's own overhead even on a busy machine.
    bc, lc = statistics.median(bare_cpu), statistics.median(lienzo_cpu)
    print(f"tokens per CPU-second: bare {bc:.1f}, Lienzo {lc:.1f}; ratio {lc / bc:.3f}x")
    print(f"per-run wall tokens/s: bare {[round(x, 1) for x in bare_tps]}, Lienzo {[round(x, 1) for x in lienzo_tps]}")
    ratio = l / b
    print(f"ratio Lienzo/bare (wall): {ratio:.3f}x (target >= 0.95x) {'OK' if ratio >= 0.95 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
