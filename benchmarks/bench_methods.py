"""Cost of each decoding method per generated token, relative to greedy decoding.

Same model and prompt as ``bench_core.py`` (on the CPU: a small LLaVA-architecture model, 8
layers x 8 heads, hidden 256, <bos> + 576 image tokens + 64 text tokens, the shape of a LLaVA-1.5
prompt; on a GPU the LLaVA-1.5-7B architecture). End-of-sequence is disabled so every method
generates exactly ``--tokens`` tokens; each method runs through :meth:`eahlib.methods.Method.generate`
with its published defaults (EAH: the paper preset). Prints the median time per token and one line
per method::

    RESULT method=<name> cost_per_token_ratio=<time per token / greedy's>

then the peak extra memory of one generate call of each of EAH's peers (VAR, VHR, VAF, heads-guided
attention) against greedy's, each in a fresh subprocess (measured as in ``bench_core.py``)::

    RESULT method=<peer> peak_memory_vs_greedy=<x>

and OPERA against beam search (both 5 beams): time per token and peak extra memory, beside beam
search with ``output_attentions=True`` (eager attention, every layer's attention of every step:
what the released OPERA code needs)::

    RESULT opera_cost_per_token_vs_beam=<x> opera_peak_memory_vs_beam=<y> output_attentions_peak_memory_vs_beam=<z>
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
from bench_core import build_model, extra_peak_memory, median_time, memory_in_subprocess

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
    "opera": {},
    "var": {},
    "vhr": {},
    "vhr+beam": {},
    "vaf": {},
    "heads_guided": {},
}
"""Methods timed, with their parameter overrides (defaults otherwise)."""
PEERS = ("var", "vhr", "vaf", "heads_guided")
"""EAH's closest peers (interventions on heads or sinks): their peak memory is compared with greedy's."""
OPERA_VARIANTS = ("beam", "opera", "beam_output_attentions")
MEMORY_VARIANTS = ("greedy", *PEERS, *OPERA_VARIANTS)


def peak_memory(variant: str, device: str, dtype: torch.dtype, tokens: int) -> float:
    """Extra peak memory (bytes) of one ``tokens``-token generate call of ``variant``."""
    model, inputs = build_model(device, dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    if variant == "beam_output_attentions":
        model.set_attn_implementation("eager")

        def run() -> None:
            model.generate(**inputs, max_new_tokens=tokens, do_sample=False, num_beams=5, output_attentions=True,
                           return_dict_in_generate=True)
    else:
        run = partial(resolve_method(variant).generate, model, inputs, tokens)
    return extra_peak_memory(run, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS),
                        help="methods to time (greedy and beam are always timed)")
    parser.add_argument("--memory-variant", choices=MEMORY_VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if args.device == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    if args.memory_variant:
        print(json.dumps({"bytes": peak_memory(args.memory_variant, args.device, dtype, args.tokens)}))
        return
    model, inputs = build_model(args.device, dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    per_token = {}
    for spec, params in METHODS.items():
        if spec not in {"greedy", "beam", *args.methods}:
            continue
        method = resolve_method(spec, params)
        run = partial(method.generate, model, inputs, args.tokens)
        per_token[spec] = median_time(run, args.repeats, args.device) / args.tokens
        print(f"  {spec:>8}: {per_token[spec] * 1000:8.1f} ms/token (median of {args.repeats})", flush=True)
    for spec, seconds in per_token.items():
        print(f"RESULT method={spec} cost_per_token_ratio={seconds / per_token['greedy']:.2f}")
    del model
    variants = ["greedy", *(p for p in PEERS if p in per_token), *(OPERA_VARIANTS if "opera" in per_token else ())]
    memory = {v: memory_in_subprocess(__file__, ["--memory-variant", v, "--device", args.device, "--tokens",
                                                 str(args.tokens)]) for v in variants}
    for variant, value in memory.items():
        print(f"  peak extra memory {variant:>22}: {value / 2**20:9.1f} MiB")
    for peer in PEERS:
        if peer in memory:
            print(f"RESULT method={peer} peak_memory_vs_greedy={memory[peer] / memory['greedy']:.2f}")
    if "opera" in memory:
        print(f"RESULT opera_cost_per_token_vs_beam={per_token['opera'] / per_token['beam']:.2f} "
              f"opera_peak_memory_vs_beam={memory['opera'] / memory['beam']:.2f} "
              f"output_attentions_peak_memory_vs_beam={memory['beam_output_attentions'] / memory['beam']:.2f}")


if __name__ == "__main__":
    main()
