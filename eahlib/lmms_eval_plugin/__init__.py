"""eahlib inside lmms-eval: a model plugin (entry point ``lmms_eval.models``: ``eahlib``, see :func:`manifest`).

Every registered eahlib method runs on every model ``eahlib.load_model`` loads, under lmms-eval's
tasks, batching and multi-GPU sharding::

    lmms-eval --model eahlib --model_args pretrained=llava-hf/llava-1.5-7b-hf,method=eah,eah.layer=1 \\
        --tasks pope --batch_size 8 --log_samples --output_path results/

``model_args`` are ``pretrained`` (a hub checkpoint, a local path, or ``organism``/``tiny-random-llava``),
``method`` (``greedy``, ``eah``, ``eah+beam``...), ``dtype``, ``attn_implementation``, ``records`` and
any ``COMPONENT.NAME=VALUE`` method parameter (values read as JSON where possible, as in
``python -m eahlib.bench --param``). The method and its parameters are checked against eahlib's registry
before a model is loaded. The method decides the decoding; the task's ``max_new_tokens`` and ``until``
apply. Per sample, the output and what the method records (the EAH head) go to a sidecar
``eahlib_<method>_<hash>[.rank<k>].jsonl`` with a ``.config.json`` of every parameter in effect, in
``records`` (default: lmms-eval's ``--output_path``, else ``./eahlib_records``). Under
``accelerate launch`` each process holds one model copy on its own GPU; lmms-eval shards the documents.

:func:`write_pope_task` turns any POPE question file and its image folder into a local lmms-eval task
scored by lmms-eval's own POPE functions, so lmms-eval's numbers can be compared with eahlib's runner
(scorer ``lmms``) on the same questions. This package imports lmms-eval only in :mod:`.model`.
"""

from __future__ import annotations

from typing import Any

from eahlib.lmms_eval_plugin.tasks import pope_doc_to_visual, write_pope_task

__all__ = ["manifest", "pope_doc_to_visual", "write_pope_task"]


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: registers ``--model eahlib``.

    A function rather than a module-level ``ModelManifest``: importing ``lmms_eval.models`` loads every
    entry point, so a module importing it at the top would be handed to lmms-eval half-initialised
    whenever it was itself imported first.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="eahlib", simple_class_path="eahlib.lmms_eval_plugin.model.EahlibLMM")
