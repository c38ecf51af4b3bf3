"""Cost of EAH and of sink profiling, as ratios against the stock model.

On the CPU: a small LLaVA-architecture model (8 layers x 8 heads, hidden 256, 576 image tokens).
On a GPU (when present, or with --device cuda): the LLaVA-1.5-7B architecture built from its
published config values with random weights in bf16 (timing needs no trained weights).

Prints the median wall time of prefill and of a 64-token greedy generate with EAH versus
without, and the peak memory of ``sink_profile`` versus ``output_attentions=True`` (eager
attention holding every layer's matrix), then one line::

    RESULT eah_generate_ratio=<x> eah_prefill_ratio=<y> profile_memory_ratio=<z>

Targets: generate ratio <= 1.10 on CPU; profile memory ratio <= 0.5 at >= 512 tokens.
CPU memory is the growth of the process's peak RSS over its level just before the call (Linux:
the peak is reset through /proc/self/clear_refs), each variant in a fresh subprocess whose glibc
returns large freed blocks to the system at once, so RSS follows the live tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import eahlib as eah

TEXT_TOKENS = 64


def build_model(device: str, dtype: torch.dtype) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The benchmark model and a one-sample prompt: <bos>, 576 image tokens, 64 text tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if device == "cuda":  # LLaVA-1.5-7B: Vicuna-7B + CLIP ViT-L/14 at 336 px
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
        vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                                  num_hidden_layers=24, num_attention_heads=16, projection_dim=768)
        image_size = 336
    else:
        text = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=8,
                           num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048)
        vision = CLIPVisionConfig(image_size=96, patch_size=4, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4)
        image_size = 96
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_id=text.vocab_size - 1,
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    n_image = (image_size // vision.patch_size) ** 2
    ids = torch.cat([torch.tensor([1]), torch.full((n_image,), config.image_token_id),
                     torch.randint(3, 900, (TEXT_TOKENS,))]).unsqueeze(0)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
              "pixel_values": torch.randn(1, 3, image_size, image_size, dtype=dtype, device=device)}
    return model, inputs


def median_time(fn: Callable[[], Any], repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int, device: str) -> dict[str, float]:
    """Median seconds of prefill and 64-token generate, stock and with EAH (paper preset)."""

    def prefill() -> None:
        with torch.no_grad():
            model(**inputs)

    def generate() -> None:
        model.generate(**inputs, max_new_tokens=64, min_new_tokens=64, do_sample=False)

    result = {"prefill": median_time(prefill, repeats, device), "generate": median_time(generate, repeats, device)}
    with eah.enhance_attention_heads(model, preset="paper"):
        result["prefill_eah"] = median_time(prefill, repeats, device)
        result["generate_eah"] = median_time(generate, repeats, device)
    return result


def peak_rss() -> int:
    """Peak resident set size of this process since the last reset, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        line = next(row for row in status if row.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak_rss() -> int:
    """Reset the peak RSS to the current RSS and return it (bytes)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return peak_rss()


def extra_peak_memory(run: Callable[[], Any], device: str) -> float:
    """Extra peak memory (bytes) of one ``run()`` under ``no_grad``: CUDA allocator peak, or peak RSS on the CPU."""
    with torch.no_grad():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = reset_peak_rss()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
            return float(torch.cuda.max_memory_allocated() - before)
        return float(peak_rss() - before)


def peak_memory(variant: str, device: str, dtype: torch.dtype) -> float:
    """Extra peak memory (bytes) of one call: ``profile`` or ``output_attentions``."""
    model, inputs = build_model(device, dtype)
    if variant == "output_attentions":
        model.set_attn_implementation("eager")
        return extra_peak_memory(lambda: model(**inputs, output_attentions=True), device)
    return extra_peak_memory(lambda: eah.sink_profile(model, **inputs), device)


def memory_in_subprocess(script: str, arguments: list[str]) -> float:
    """Run ``script --memory-variant ...`` in a fresh interpreter (a clean peak) and read the bytes it prints."""
    out = subprocess.run(
        [sys.executable, script, *arguments],
        check=True, capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-variant", choices=["profile", "output_attentions"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype_name = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    if args.device == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    if args.memory_variant:
        print(json.dumps({"bytes": peak_memory(args.memory_variant, args.device, dtype)}))
        return

    model, inputs = build_model(args.device, dtype)
    n_tokens = inputs["input_ids"].shape[1]
    print(f"device={args.device} dtype={dtype_name} prompt_tokens={n_tokens} "
          f"layers={model.config.text_config.num_hidden_layers} heads={model.config.text_config.num_attention_heads}")
    t = timings(model, inputs, args.repeats, args.device)
    for key, value in t.items():
        print(f"  {key:>14}: {value * 1000:9.1f} ms (median of {args.repeats})")
    del model
    memory = {v: memory_in_subprocess(__file__, ["--memory-variant", v, "--device", args.device, "--dtype", dtype_name])
              for v in ("profile", "output_attentions")}
    for key, value in memory.items():
        print(f"  peak extra memory {key:>17}: {value / 2**20:9.1f} MiB")
    print(f"RESULT eah_generate_ratio={t['generate_eah'] / t['generate']:.3f} "
          f"eah_prefill_ratio={t['prefill_eah'] / t['prefill']:.3f} "
          f"profile_memory_ratio={memory['profile'] / memory['output_attentions']:.3f}")


if __name__ == "__main__":
    main()
