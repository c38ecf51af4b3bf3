"""The lmms-eval model class: an eahlib model and method behind lmms-eval's ``lmms`` interface."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image

from eahlib.bench.__main__ import parse_params
from eahlib.bench.runner import chat_prompt, config_hash, decode_new_tokens, encode_batch
from eahlib.methods import Method, resolve_method
from eahlib.models import load_model

DEFAULT_MAX_NEW_TOKENS = 1024
"""Used when a task sets no ``max_new_tokens`` (lmms-eval's own models use the same default)."""


class EahlibLMM(lmms):
    """An eahlib model and method as an lmms-eval "simple" model (one image + text per request).

    Args:
        pretrained: what :func:`eahlib.load_model` loads (hub checkpoint, local path, ``organism``).
        method: an eahlib method spec (``greedy``, ``eah``, ``eah+beam``...).
        batch_size: requests per batched, left-padded generate call (lmms-eval's ``--batch_size``).
        max_batch_size: passed by lmms-eval for ``--batch_size auto``, which is not supported.
        device: ``cuda``/``cpu``/``cuda:1`` (default: ``cuda`` when available); with several processes
            ``cuda`` means each process's own GPU.
        dtype: ``auto`` or a torch dtype name.
        attn_implementation: the attention of the layers the method does not touch.
        records: folder of the sidecar records (default: ``--output_path``, else ``./eahlib_records``).
        **method_params: ``COMPONENT.NAME=VALUE`` method parameters, e.g. ``eah.layer=1``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        method: str = "greedy",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str = "sdpa",
        records: str | None = None,
        **method_params: Any,
    ) -> None:
        super().__init__()
        self.method = _resolve(method, method_params)
        if pretrained is None:
            raise ValueError("model_args needs pretrained=..., e.g. pretrained=llava-hf/llava-1.5-7b-hf or pretrained=organism.")
        if dtype != "auto" and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; use auto, bfloat16, float16 or float32.")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r}: give a positive integer (auto batch sizes are not supported).")
        self.batch_size_per_gpu = int(batch_size)
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self._world_size > 1 and device == "cuda":
            device = f"cuda:{self.accelerator.local_process_index}"
        self.model, self.processor = load_model(pretrained, dtype=dtype, device_map=device,
                                                attn_implementation=attn_implementation)
        self.config = {"pretrained": pretrained, **self.method.settings(), "dtype": str(dtype),
                       "attn_implementation": attn_implementation, "batch_size": self.batch_size_per_gpu,
                       "world_size": self._world_size}
        self.config_hash = config_hash(self.config)
        self.records = _records_file(records, self.method, self.config_hash, self._rank, self._world_size)
        self.records.parent.mkdir(parents=True, exist_ok=True)
        self.records.write_text("", encoding="utf-8")
        self.records.with_name(f"{self.records.name.split('.')[0]}.config.json").write_text(
            json.dumps({"config_hash": self.config_hash, **self.config}, indent=2, default=str), encoding="utf-8"
        )
        logger.info(f"eahlib: {self.method.name} on {pretrained}; per-sample records in {self.records}")

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answer each request with the method, in batches of requests sharing a generation setting."""
        answers = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        overridden = sorted({json.dumps(r.args[1], sort_keys=True, default=str)
                             for r in requests if _samples_or_beams(r.args[1])})
        if overridden:
            logger.warning(f"eahlib: the task asks for {overridden}; the eahlib method {self.method.name} decides the decoding.")
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(_generation_setting(request.args[1]), sort_keys=True), []).append(index)
        for setting, indices in groups.items():
            max_new_tokens, until = json.loads(setting)
            for start in range(0, len(indices), self.batch_size_per_gpu):
                batch = indices[start:start + self.batch_size_per_gpu]
                for index, answer in zip(batch, self._answer([requests[i] for i in batch], max_new_tokens, until)):
                    answers[index] = answer
        return answers

    def _answer(self, requests: list[Instance], max_new_tokens: int, until: list[str]) -> list[str]:
        images, prompts, docs = [], [], []
        for request in requests:
            context, _, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
                raise ValueError(f"eahlib answers with one image per question; task {task!r} doc {doc_id} gives "
                                 f"{len(visuals)} visual(s) of type {sorted({type(v).__name__ for v in visuals})}.")
            images.append(visuals[0])
            prompts.append(chat_prompt(self.processor, context))
            docs.append({"task": task, "split": split, "doc_id": doc_id})
        inputs = encode_batch(self.model, self.processor, images, prompts)
        generation = self.method.generate(self.model, inputs, max_new_tokens)
        answers = [_cut(text, until) for text in decode_new_tokens(self.processor, generation.tokens)]
        with self.records.open("a", encoding="utf-8") as sink:
            for doc, prompt, answer, extra in zip(docs, prompts, answers, generation.extras):
                sink.write(json.dumps({**doc, "prompt": prompt, "output": answer, "method": self.method.name,
                                       "config_hash": self.config_hash, **extra}) + "\n")
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "eahlib's lmms-eval model generates answers (generate_until tasks such as pope); it does not score "
            "loglikelihood requests."
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("eahlib's lmms-eval model answers single-round tasks only (generate_until).")


def _resolve(spec: str, given: dict[str, Any]) -> Method:
    """The method from ``method=`` and the ``COMPONENT.NAME=VALUE`` model_args; unknown names rejected."""
    unknown = sorted(key for key in given if "." not in key)
    if unknown:
        raise ValueError(
            f"Unknown model_args {unknown} for --model eahlib; it takes pretrained, method, batch_size, device, "
            "dtype, attn_implementation, records and COMPONENT.NAME=VALUE method parameters (e.g. eah.layer=1)."
        )
    pairs = [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in given.items()]
    return resolve_method(spec, parse_params(pairs))


def _samples_or_beams(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("do_sample")) or float(kwargs.get("temperature") or 0) > 0 or int(kwargs.get("num_beams") or 1) > 1


def _generation_setting(kwargs: dict[str, Any]) -> tuple[int, list[str]]:
    """``(max_new_tokens, until)`` of a request's generation kwargs; the method decides the decoding."""
    until = kwargs.get("until") or []
    return int(kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS), [until] if isinstance(until, str) else list(until)


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first stop string (lmms-eval's ``until``), stripped."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text.strip()


def _records_file(records: str | None, method: Method, run_hash: str, rank: int, world_size: int) -> Path:
    if records is None:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output_path")
        records = parser.parse_known_args(sys.argv[1:])[0].output_path or "eahlib_records"
    suffix = f".rank{rank}" if world_size > 1 else ""
    return Path(records) / f"eahlib_{method.name.replace('+', '-')}_{run_hash}{suffix}.jsonl"
