"""Cost of each decoding method per generated token, relative to greedy decoding.

Same model and prompt as ``bench_core.py`` (on the CPU: a small LLaVA-architecture model, 8
layers x 8 heads, hidden 256, <bos> + 576 image tokens + 64 text tokens). End-of-sequence is
disabled so every method generates exactly ``--tokens`` tokens; each method runs through
:meth:`eahlib.methods.Method.generate` with its published defaults (EAH: the paper preset).
Prints the median time per token and one line per method::

    RESULT method=<name> cost_per_token_ratio=<time per token / greedy's>
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from bench_core import build_model, median_time

from eahlib.methods import resolve_method

METHODS: dict[str, dict[str, dict[str, object]]] = {
    "greedy": {},
    "beam": {},
    "sample": {},
    "eah": {"eah": {"preset": "paper"}},
    "pai": {},
    "vcd": {},
    "dola": {},
    "eah+vcd": {"eah": {"preset": "paper"}},
}
"""Methods timed, with their parameter overrides (defaults otherwise)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if args.device == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    model, inputs = build_model(args.device, dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    per_token = {}
    for spec, params in METHODS.items():
        method = resolve_method(spec, params)
        run = partial(method.generate, model, inputs, args.tokens)
        per_token[spec] = median_time(run, args.repeats, args.device) / args.tokens
        print(f"  {spec:>8}: {per_token[spec] * 1000:8.1f} ms/token (median of {args.repeats})", flush=True)
    for spec, seconds in per_token.items():
        print(f"RESULT method={spec} cost_per_token_ratio={seconds / per_token['greedy']:.2f}")


if __name__ == "__main__":
    main()
