"""Model adapters: one declarative table of the supported vision-language families.

Each :class:`ModelFamily` row says where the language model sits inside the full model, which
sub-config describes it, and which config attributes hold the ids of the visual tokens that the
processor expands into the prompt. Everything else in eahlib asks this table; there are no
``if "llava" in name`` branches elsewhere.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelFamily:
    """Where a family keeps its language model and how its image tokens are found.

    Attributes:
        name: short family name.
        model_types: the ``config.model_type`` values of the family's checkpoints.
        architectures: class names of the full models of this family.
        language_model: dotted attribute path from the full model to the language model (``""``: the
            full model is itself the decoder, as in Phi-4-multimodal).
        text_config: dotted path of the language model's sub-config (``None``: the top config).
        image_token_attrs: config attributes holding visual-token ids, dotted paths from the top config
            (``"vision_config.image_token_id"``); also looked up on the text config; missing ones skipped.
        checkpoint: a public checkpoint of the family, for documentation and examples.
        attention: attribute of a decoder layer holding its self-attention module; a layer without it
            (a hybrid model's convolution or recurrent layer) has no attention to study.
        attention_types: class names of the softmax self-attention modules, for hybrid models that keep another
            mixer (Mamba, linear attention, an MLP...) under the same ``attention`` attribute in some layers; a
            layer whose module there is of another class has no attention to study. Empty: any module there is.
        auto_class: the ``transformers`` auto class that loads the family's checkpoints.
        output_projection: attribute of the self-attention module holding the output projection, whose input
            is the heads' outputs side by side (``[B, q, H * d]``), before they are mixed.
        key_block_size: attribute of the text config holding the number of keys per block of the ``block_indices``
            that a block-sparse layer hands its attention function instead of folding them into its mask
            (MiniMax-M3's lightning indexer); empty: the family's layers hand none.
        notes: what is special about the family for eahlib (masks, layout), shown in the support matrix.
    """

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    language_model: str
    text_config: str | None
    image_token_attrs: tuple[str, ...]
    checkpoint: str
    attention: str = "self_attn"
    attention_types: tuple[str, ...] = ()
    auto_class: str = "AutoModelForImageTextToText"
    notes: str = ""
    output_projection: str = "o_proj"
    key_block_size: str = ""


@dataclass(frozen=True)
class UnservedFamily:
    """A vision-language family eahlib cannot serve, and why (raised by :func:`model_family`).

    Attributes:
        model_types: the ``config.model_type`` values.
        architectures: class names of the full models.
        reason: why the definitions or the interventions do not apply, or what fails.
    """

    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    reason: str


_IMAGE_IDS = ("image_token_id", "image_token_index")

FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("llava", ("llava",), ("LlavaForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "llava-hf/llava-1.5-7b-hf"),
    ModelFamily("llava_next", ("llava_next",), ("LlavaNextForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "llava-hf/llava-v1.6-vicuna-7b-hf",
                notes="any-resolution tiles: the image-token count depends on the image size"),
    ModelFamily("qwen2_vl", ("qwen2_vl",), ("Qwen2VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen2-VL-2B-Instruct",
                notes="GQA, M-RoPE"),
    ModelFamily("qwen2_5_vl", ("qwen2_5_vl",), ("Qwen2_5_VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen2.5-VL-3B-Instruct",
                notes="GQA, M-RoPE, windowed vision attention"),
    ModelFamily("instructblip", ("instructblip",), ("InstructBlipForConditionalGeneration",), "language_model",
                "text_config", _IMAGE_IDS, "Salesforce/instructblip-vicuna-7b",
                notes="Q-Former queries are the image tokens; generate runs the language model on embeddings"),
    ModelFamily("blip_2", ("blip-2",), ("Blip2ForConditionalGeneration",), "language_model", "text_config",
                _IMAGE_IDS, "Salesforce/blip2-opt-2.7b", output_projection="out_proj",
                notes="Q-Former queries are the image tokens, before <bos>; language model at the top. Served: OPT "
                      "checkpoints with image_token_index set; Flan-T5 ones (encoder-decoder) and checkpoints without "
                      "image_token_index are refused"),
    ModelFamily("idefics3", ("idefics3",), ("Idefics3ForConditionalGeneration",), "model.text_model",
                "text_config", _IMAGE_IDS, "HuggingFaceM4/Idefics3-8B-Llama3",
                notes="language model at model.text_model; SmolVLM v1 checkpoints (HuggingFaceTB/SmolVLM-256M-Instruct) "
                      "are this class"),
    ModelFamily("smolvlm", ("smolvlm",), ("SmolVLMForConditionalGeneration",), "model.text_model", "text_config",
                _IMAGE_IDS, "HuggingFaceTB/SmolVLM2-2.2B-Instruct", notes="language model at model.text_model"),
    ModelFamily("gemma3", ("gemma3", "shieldgemma2"), ("Gemma3ForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "google/gemma-3-4b-it",
                notes="sliding-window layers (5 of every 6); bidirectional attention inside each image"),
    ModelFamily("paligemma", ("paligemma",), ("PaliGemmaForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "google/paligemma2-3b-mix-224",
                notes="bidirectional prefix (image and prompt); no chat template"),
    ModelFamily("lfm2_vl", ("lfm2_vl",), ("Lfm2VlForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "LiquidAI/LFM2-VL-450M",
                notes="hybrid language model: short-convolution layers between attention layers",
                output_projection="out_proj"),
    ModelFamily("phi4_multimodal", ("phi4_multimodal",), ("Phi4MultimodalForCausalLM",), "model", None,
                ("vision_config.image_token_id",), "microsoft/Phi-4-multimodal-instruct",
                auto_class="AutoModelForCausalLM",
                notes="no text sub-config (the top config is the language model's); image id under vision_config"),
    ModelFamily("vipllava", ("vipllava",), ("VipLlavaForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "llava-hf/vip-llava-7b-hf"),
    ModelFamily("video_llava", ("video_llava",), ("VideoLlavaForConditionalGeneration",), "model.language_model",
                "text_config", (*_IMAGE_IDS, "video_token_index"), "LanguageBind/Video-LLaVA-7B-hf",
                notes="images come as pixel_values_images; video frames as video tokens"),
    ModelFamily("llava_next_video", ("llava_next_video",), ("LlavaNextVideoForConditionalGeneration",),
                "model.language_model", "text_config", (*_IMAGE_IDS, "video_token_index"),
                "llava-hf/LLaVA-NeXT-Video-7B-hf", notes="LLaVA-NeXT any-resolution images; video tokens too"),
    ModelFamily("llava_onevision", ("llava_onevision",), ("LlavaOnevisionForConditionalGeneration",),
                "model.language_model", "text_config", (*_IMAGE_IDS, "video_token_index"),
                "llava-hf/llava-onevision-qwen2-7b-ov-hf",
                notes="any-resolution SigLIP tiles (image-token count depends on the image size); video tokens too"),
    ModelFamily("aya_vision", ("aya_vision",), ("AyaVisionForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "CohereForAI/aya-vision-8b",
                notes="Cohere2 language model: sliding-window layers (3 of every 4)"),
    ModelFamily("cohere2_vision", ("cohere2_vision",), ("Cohere2VisionForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "CohereLabs/command-a-vision-07-2025",
                notes="Cohere2 language model: sliding-window layers (3 of every 4)"),
    ModelFamily("mistral3", ("mistral3",), ("Mistral3ForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
                notes="Pixtral tower: rows of image tokens separated by [IMG_BREAK] tokens; every layer sliding "
                      "where the Mistral text config sets a window; also Mistral Small 4 (a mistral4 text config: "
                      "multi-head latent attention, MoE)"),
    ModelFamily("lighton_ocr", ("lighton_ocr",), ("LightOnOcrForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "lightonai/LightOnOCR-1B-1025",
                notes="Pixtral tower: rows of image tokens separated by [IMG_BREAK] tokens (not image tokens)"),
    ModelFamily("got_ocr2", ("got_ocr2", "pp_chart2table"), ("GotOcr2ForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "stepfun-ai/GOT-OCR-2.0-hf",
                notes="also PP-Chart2Table (same class)"),
    ModelFamily("internvl", ("internvl",), ("InternVLForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "OpenGVLab/InternVL3-1B-hf"),
    ModelFamily("qianfan_ocr", ("qianfan_ocr",), ("QianfanOCRForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "baidu/Qianfan-OCR"),
    ModelFamily("idefics2", ("idefics2",), ("Idefics2ForConditionalGeneration",), "model.text_model",
                "text_config", _IMAGE_IDS, "HuggingFaceM4/idefics2-8b",
                notes="perceiver-resampled image tokens; language model at model.text_model; Mistral sliding window "
                      "on every layer where the text config sets one"),
    ModelFamily("granite_docling", ("granite_docling",), ("GraniteDoclingForConditionalGeneration",),
                "model.text_model", "text_config", _IMAGE_IDS, "ibm-granite/granite-for-docling-500m",
                notes="language model at model.text_model; DeepStack: vision features added to the first text "
                      "layers' hidden states at the image positions"),
    ModelFamily("aria", ("aria",), ("AriaForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "rhymes-ai/Aria", notes="mixture-of-experts language model"),
    ModelFamily("llama4", ("llama4",), ("Llama4ForConditionalGeneration",), "language_model.model", "text_config",
                _IMAGE_IDS, "meta-llama/Llama-4-Scout-17B-16E",
                notes="chunked-attention layers (3 of every 4) between full-attention NoPE layers; mixture of "
                      "experts; language model at the top (language_model.model)"),
    ModelFamily("hyperclovax_vision_v2", ("hyperclovax_vision_v2",), ("HyperCLOVAXVisionV2ForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "naver-hyperclovax/HyperCLOVAX-SEED-Think-32B", notes="Qwen2.5-VL vision tower; video tokens too"),
    ModelFamily("llava_onevision1_5", ("llava_onevision1_5",), ("LlavaOnevision15ForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "Deep-VLM/LLaVA-OneVision-1.5-4B-Instruct-hf", notes="video tokens too"),
    ModelFamily("cohere_compass", ("cohere_compass",), ("CohereCompassForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "CohereLabs/North-Micro-Vision-Instruct",
                notes="RoPE per layer type (NoPE where a type has none); sliding-window layers where layer_types "
                      "has them; M-RoPE; DeepStack; video tokens too"),
    ModelFamily("kimi_k25", ("kimi_k25",), ("Kimi_K25ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "moonshotai/Kimi-K2.6",
                notes="DeepSeek-V3 language model: multi-head latent attention, mixture of experts; video tokens too"),
    ModelFamily("mistral_large4", ("mistral_large4",), ("MistralLarge4ForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "mistralai/Mistral-Large-4-1T-A52B",
                notes="DeepSeek sparse attention: each query sees only its indexer's top-k keys; multi-head latent "
                      "attention, NoPE layers, mixture of experts; Pixtral tower with [IMG_BREAK] rows"),
    ModelFamily("granite4_vision", ("granite4_vision",), ("Granite4VisionForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "ibm-granite/granite-4.0-3b-vision",
                notes="image positions start empty; window Q-Former features are added to them before chosen text "
                      "layers (DeepStack); any-resolution tiles"),
    ModelFamily("fast_vlm", ("fast_vlm",), ("FastVlmForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "KamilaMila/FastVLM-7B",
                notes="the released FastViTHD tower loads through timm (timm_wrapper): install timm to load "
                      "checkpoints; the language side needs nothing extra"),
    ModelFamily("perception_lm", ("perception_lm",), ("PerceptionLMForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "facebook/Perception-LM-1B",
                notes="the released Perception Encoder tower loads through timm (timm_wrapper): install timm to "
                      "load checkpoints; video tokens too"),
    # --- group 1: rows above this line ---
    
    ModelFamily("glm4v", ("glm4v",), ("Glm4vForConditionalGeneration",), "model.language_model", "text_config",
                ("image_token_id",), "zai-org/GLM-4.1V-9B-Thinking",
                notes="GQA, M-RoPE; video frames also use the image token"),
    ModelFamily("glm46v", ("glm46v", "glmga"), ("Glm46VForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "zai-org/GLM-4.6V",
                notes="GQA, M-RoPE; video frames also use the image token; glmga: its own config, same model class"),
    ModelFamily("glm4v_moe", ("glm4v_moe",), ("Glm4vMoeForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "zai-org/GLM-4.5V",
                notes="MoE language model, GQA, M-RoPE; video frames also use the image token"),
    ModelFamily("glm_ocr", ("glm_ocr",), ("GlmOcrForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "zai-org/GLM-OCR",
                notes="GQA, M-RoPE; video frames also use the image token"),
    ModelFamily("qwen3_vl", ("qwen3_vl",), ("Qwen3VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen3-VL-4B-Instruct",
                notes="GQA, interleaved M-RoPE; DeepStack adds vision features to the first layers' hidden states"),
    ModelFamily("qwen3_vl_moe", ("qwen3_vl_moe",), ("Qwen3VLMoeForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen3-VL-30B-A3B-Instruct",
                notes="MoE language model, GQA, interleaved M-RoPE, DeepStack"),
    ModelFamily("qwen3_5", ("qwen3_5",), ("Qwen3_5ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen3.5-27B",
                notes="hybrid language model: gated-delta-net (linear attention) layers between gated attention "
                      "layers; M-RoPE"),
    ModelFamily("qwen3_5_moe", ("qwen3_5_moe",), ("Qwen3_5MoeForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen3.5-35B-A3B",
                notes="hybrid MoE language model: gated-delta-net layers between gated attention layers; M-RoPE"),
    ModelFamily("qwen4_exp", ("qwen4_exp",), ("Qwen4ExpForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "Qwen/Qwen4-Exp",
                notes="hybrid MoE language model: gated-delta-net layers between gated attention layers whose QSA "
                      "indexer selects the keys each query sees (the layer's own mask); M-RoPE"),
    ModelFamily("paddleocr_vl", ("paddleocr_vl",), ("PaddleOCRVLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "PaddlePaddle/PaddleOCR-VL",
                notes="ERNIE-4.5 language model: GQA, M-RoPE"),
    ModelFamily("video_llama_3", ("video_llama_3",), ("VideoLlama3ForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "lkhl/VideoLLaMA3-2B-Image-HF", notes="Qwen2 language model fed embeddings only; GQA, 1-D RoPE"),
    ModelFamily("ernie4_5_vl_moe", ("ernie4_5_vl_moe",), ("Ernie4_5_VLMoeForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"),
                "baidu/ERNIE-4.5-VL-28B-A3B-PT",
                notes="MoE language model with separate text and vision experts; GQA, M-RoPE"),
    ModelFamily("hunyuan_vl", ("hunyuan_vl",), ("HunYuanVLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "tencent/HunyuanOCR",
                notes="row separators and image boundaries are image tokens too; 4-axis M-RoPE"),
    ModelFamily("hy_v4_vl", ("hy_v4_vl",), ("HYV4VLForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "tencent/Hy4",
                notes="MoE language model: MLA with a learned attention sink per head and a DSA top-k key "
                      "selection; a separator image token ends each row; M-RoPE; eager attention only"),
    ModelFamily("dots3_note", ("dots3_note",), ("Dots3NoteForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "dots-studio/dots3-note-prev",
                notes="MoE language model: MLA with DSA top-k key selection, sliding-window MLA layers with their "
                      "own head count (per_layer_config: profile them apart with layers=); gated attention output"),
    ModelFamily("exaone4_5", ("exaone4_5",), ("Exaone4_5_ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "LGAI-EXAONE/EXAONE-4.5-33B",
                notes="EXAONE 4 language model fed embeddings only: sliding-window layers (3 of every 4), GQA, "
                      "1-D RoPE"),
    ModelFamily("step3p7", ("step3p7",), ("Step3p7ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "stepfun-ai/Step-3.7-Flash",
                notes="MoE language model fed embeddings only: sliding-window layers (a head count of their own "
                      "through per_layer_config: profile them apart with layers=), head-gated attention output, GQA"),
    ModelFamily("minimax_m3_vl", ("minimax_m3_vl",), ("MiniMaxM3SparseForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_index", "video_token_index"),
                "MiniMaxAI/MiniMax-M3", key_block_size="index_block_size",
                notes="MoE language model: lightning-indexer block-sparse layers (top key blocks per query and "
                      "indexer head) between full attention layers, GQA, partial RoPE"),
    ModelFamily("qwen2_5_omni_thinker", ("qwen2_5_omni_thinker",), ("Qwen2_5OmniThinkerForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_index", "video_token_index"),
                "Qwen/Qwen2.5-Omni-7B",
                notes="the thinker (text output) of Qwen2.5-Omni; GQA, M-RoPE; audio tower unused"),
    ModelFamily("qwen3_omni_moe_thinker", ("qwen3_omni_moe_thinker",),
                ("Qwen3OmniMoeThinkerForConditionalGeneration",), "model.language_model", "text_config",
                ("image_token_id", "video_token_id"), "Qwen/Qwen3-Omni-30B-A3B-Instruct",
                notes="the thinker (text output) of Qwen3-Omni: MoE language model, GQA, interleaved M-RoPE, "
                      "DeepStack; audio tower unused"),
    ModelFamily("glm5_next", ("glm5_next",), ("Glm5NextForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id",), "zai-org/GLM-5.3-Flash",
                attention_types=("Glm5NextTextAttention",),
                notes="hybrid MoE language model: KDA linear-attention layers (kept at self_attn) between NoPE MLA "
                      "layers whose DSA indexer selects the keys each query sees (the layer's own mask)"),
    # --- group 2: rows above this line ---
    
    ModelFamily("janus", ("janus",), ("JanusForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "deepseek-community/Janus-Pro-1B",
                notes="understanding reads SigLIP features at the image tokens; the VQ image-generation path is "
                      "not involved"),
    ModelFamily("deepseek_vl", ("deepseek_vl",), ("DeepseekVLForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "deepseek-community/deepseek-vl-1.3b-chat"),
    ModelFamily("deepseek_vl_hybrid", ("deepseek_vl_hybrid",), ("DeepseekVLHybridForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "deepseek-community/deepseek-vl-7b-chat",
                notes="two vision towers (SigLIP low-res, SAM high-res) fused per image token"),
    ModelFamily("ovis2", ("ovis2",), ("Ovis2ForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "thisisiron/Ovis2-1B-hf",
                notes="image tokens are mixtures of a visual embedding table; indicator tokens around them are not "
                      "image tokens"),
    ModelFamily("ovis2_5", ("ovis2_5",), ("Ovis2_5ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "ovis-community/Ovis2.5-2B",
                notes="native-resolution tower: the image-token count depends on the image size"),
    ModelFamily("cosmos3_edge", ("cosmos3_edge",), ("Cosmos3EdgeForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "nvidia/Cosmos3-Edge",
                notes="GQA, M-RoPE"),
    ModelFamily("cosmos3_omni", ("cosmos3_omni",), ("Cosmos3OmniForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "nvidia/Cosmos3-Nano",
                notes="Qwen3-VL layout: GQA, interleaved M-RoPE, deepstack image features added in early layers"),
    ModelFamily("molmo2", ("molmo2",), ("Molmo2ForConditionalGeneration",), "model.language_model", "text_config",
                _IMAGE_IDS, "allenai/Molmo2-8B",
                notes="bidirectional attention over the whole image block (patches, column, start and end tokens); "
                      "image id `image_patch_id`"),
    ModelFamily("minicpmv4_6", ("minicpmv4_6",), ("MiniCPMV4_6ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "openbmb/MiniCPM-V-4.6",
                notes="hybrid language model (Qwen3.5: gated-delta-net linear-attention layers between attention layers)"),
    ModelFamily("minicpm_ocr", ("minicpm_ocr",), ("MiniCPMOcrForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "openbmb/MiniCPM-OCR-1.0",
                notes="hybrid language model (Qwen3.5: gated-delta-net linear-attention layers between attention layers)"),
    ModelFamily("minicpmv4_7", ("minicpmv4_7",), ("MiniCPMV4_7ForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "openbmb/MiniCPM-V-4.7-1B",
                notes="hybrid language model (Qwen3.5: gated-delta-net linear-attention layers between attention "
                      "layers); M-RoPE over the image canvas"),
    ModelFamily("lfm3_vl", ("lfm3_vl",), ("Lfm3VlForConditionalGeneration",), "model.language_model", "text_config",
                ("image_token_id", "video_token_id"), "LiquidAI/LFM3-VL-2B",
                notes="hybrid language model: short-convolution layers between full and sliding-window attention layers"),
    ModelFamily("nemotron_h_omni", ("nemotron_h_omni",), ("NemotronH_Omni_Reasoning_V3",), "language_model",
                "text_config", _IMAGE_IDS, "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16",
                attention="mixer", attention_types=("NemotronHAttention",),
                notes="hybrid language model: Mamba-2, MoE and MLP blocks between attention blocks (every block's "
                      "mixer is `mixer`); language model at the top"),
    ModelFamily("gemma4", ("gemma4",), ("Gemma4ForConditionalGeneration",), "model.language_model", "text_config",
                ("image_token_id", "video_token_id"), "google/gemma-4-e2b-it",
                notes="sliding-window layers, bidirectional inside each image (use_bidirectional_attention='vision'); "
                      "full-attention layers causal; per-layer token embeddings; KV-shared layers"),
    ModelFamily("gemma4_unified", ("gemma4_unified",), ("Gemma4UnifiedForConditionalGeneration",),
                "model.language_model", "text_config", ("image_token_id", "video_token_id"), "google/gemma-4-12B-it",
                notes="encoder-free (pixel patches projected straight to image tokens); sliding-window layers; "
                      "bidirectional inside each image in every layer"),
    ModelFamily("apertus1p5", ("apertus1p5",), ("Apertus1p5ForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "swiss-ai/Apertus-v1.5-8B",
                notes="discrete image tokens: VQ codes embedded by the language model's own vocabulary at the image "
                      "token positions"),
    ModelFamily("deepseek_ocr2", ("deepseek_ocr2",), ("DeepseekOcr2ForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "deepseek-community/DeepSeek-OCR-2",
                notes="image tokens are learned queries of a vision encoder (144 or 256 per view) plus a view "
                      "separator; MoE language model"),
    ModelFamily("unlimited_ocr", ("unlimited_ocr",), ("UnlimitedOcrForConditionalGeneration",),
                "model.language_model", "text_config", _IMAGE_IDS, "baidu/Unlimited-OCR",
                notes="reference sliding windows: the whole prompt stays visible, only generated tokens slide; "
                      "MoE language model"),
    # --- group 3: rows above this line ---
    
    ModelFamily("instructblipvideo", ("instructblipvideo",), ("InstructBlipVideoForConditionalGeneration",),
                "language_model", "text_config", ("video_token_id", "video_token_index"),
                "Salesforce/instructblip-vicuna-7b",
                notes="Q-Former queries of every frame are the video tokens, before <bos>; language model at the top; "
                      "Flan-T5 checkpoints (encoder-decoder) are refused"),
    ModelFamily("fuyu", ("fuyu",), ("FuyuForCausalLM",), "model.language_model", "text_config", _IMAGE_IDS,
                "adept/fuyu-8b", output_projection="dense",
                notes="no vision tower: linearly embedded patches; a newline token (not an image token) ends each row"),
    ModelFamily("chameleon", ("chameleon",), ("ChameleonForConditionalGeneration",), "model", None, _IMAGE_IDS,
                "facebook/chameleon-7b",
                notes="VQ image codes embedded as vocabulary tokens in place of the <image> placeholders; "
                      "no text sub-config (the decoder is model)"),
    ModelFamily("emu3", ("emu3",), ("Emu3ForConditionalGeneration",), "model.text_model", "text_config", _IMAGE_IDS,
                "BAAI/Emu3-Chat-hf",
                notes="VQ image codes embedded as vocabulary tokens in place of the <image> placeholders (one "
                      "end-of-line code per row among them); language model at model.text_model"),
    ModelFamily("muse_glimmer", ("muse_glimmer",), ("MuseGlimmerForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "meta-models/Muse-Glimmer-30B",
                notes="sliding-window layers (3 of every 4); full-attention layers without position embeddings"),
    ModelFamily("muse_spark", ("muse_spark",), ("MuseSparkForConditionalGeneration",), "model.language_model",
                "text_config", ("image_token_id", "video_token_id"), "meta-models/Muse-Spark-Open-816B-A42B",
                notes="sliding-window layers (3 of every 4); full-attention layers without position embeddings; MoE; "
                      "audio tokens are not image tokens"),
    ModelFamily("inkling", ("inkling_mm_model",), ("InklingForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "thinkingmachines/Inkling",
                notes="sliding-window layers (5 of every 6); learned relative-position bias on the logits; MoE; "
                      "audio tokens are not image tokens"),
    ModelFamily("inkling2", ("inkling2",), ("Inkling2ForConditionalGeneration",), "model.language_model",
                "text_config", _IMAGE_IDS, "thinkingmachines/Inkling-2-Small-MXFP8",
                notes="sliding-window layers (5 of every 6); relative-position bias on the logits; a sink logit per "
                      "head and query; eager attention only; MoE"),
    # --- group 4: rows above this line ---
    
)

UNSERVED: tuple[UnservedFamily, ...] = (
    UnservedFamily(("mllama",), ("MllamaForConditionalGeneration",),
                   "cross-attention model: the image reaches the language model through cross-attention layers, "
                   "not as tokens of the sequence, so there are no image tokens whose received attention to count"),
    UnservedFamily(("idefics",), ("IdeficsForVisionText2Text",),
                   "cross-attention model (Flamingo-style): the image reaches the language model through gated "
                   "cross-attention layers, not as tokens of the sequence, so there are no image tokens whose "
                   "received attention to count"),
    UnservedFamily(("mistral4",), ("Mistral4ForCausalLM",),
                   "text-only language model: transformers maps model type mistral4 to Mistral4ForCausalLM, which has "
                   "no vision tower, no image input and no image-token id; Mistral Small 4 checkpoints with images "
                   "load as Mistral3ForConditionalGeneration (a mistral4 text config), served by the mistral3 row"),
    # --- group 1: rows above this line ---
    
    # --- group 2: rows above this line ---
    
    UnservedFamily(("gemma3n",), ("Gemma3nForConditionalGeneration",),
                   "the vision tower is timm's MobileNetV5 (transformers' TimmWrapperModel), and eahlib does not depend "
                   "on timm (it pulls torchvision and a CUDA build of torch)"),
    UnservedFamily(("t5gemma2",), ("T5Gemma2ForConditionalGeneration",),
                   "encoder-decoder language model: the image tokens are in the encoder's sequence and the decoder "
                   "reaches them only through cross-attention (merged with its self-attention) to encoder outputs, "
                   "so the generated tokens have no image tokens of their own sequence to attend"),
    UnservedFamily(("diffusion_gemma",), ("DiffusionGemmaForBlockDiffusion",),
                   "block-diffusion model: an encoder reads the prompt (image tokens included) into a KV cache and a "
                   "bidirectional decoder denoises a canvas of new tokens against it; its logits are per canvas "
                   "position, not next-token predictions over the prompt, so there is no autoregressive decoding "
                   "to steer"),
    # --- group 3: rows above this line ---
    
    UnservedFamily(("florence2", "pix2struct", "pp_formulanet", "udop", "vision-encoder-decoder"),
                   ("Florence2ForConditionalGeneration", "Pix2StructForConditionalGeneration",
                    "PPFormulaNetForConditionalGeneration", "UdopForConditionalGeneration", "VisionEncoderDecoderModel"),
                   "encoder-decoder model: the image (with the prompt) goes through an encoder and the text decoder "
                   "reads it only through cross-attention, so there are no image tokens in the decoder's "
                   "self-attention whose received attention to count"),
    UnservedFamily(("blip",), ("BlipForConditionalGeneration",),
                   "cross-attention model: every layer of BLIP's text decoder cross-attends to the image features, "
                   "which are not tokens of the sequence, so there are no image tokens whose received attention to "
                   "count"),
    UnservedFamily(("git",), ("GitForCausalLM",),
                   "the image features are prepended to the text embeddings at positions that have no image-token "
                   "ids in input_ids (no image-token ids to locate them by), and the text self-attention computes its "
                   "softmax inline instead of dispatching through transformers' AttentionInterface"),
    UnservedFamily(("kosmos-2", "kosmos-2.5"), ("Kosmos2ForConditionalGeneration", "Kosmos2_5ForConditionalGeneration"),
                   "the image embeddings go where the image_embeds_position_mask input says, and the placeholder "
                   "ids there are ordinary tokens (Kosmos-2: the ids after <unk>; Kosmos-2.5: <s>, which also starts "
                   "the prompt), so image tokens cannot be located by id in input_ids"),
    UnservedFamily(("pi0", "pi05"), ("PI0ForConditionalGeneration", "PI05ForConditionalGeneration"),
                   "robot action model: a PaliGemma prefix feeds an action expert that predicts a chunk of actions "
                   "by flow matching ([batch, chunk_size, max_action_dim]); it has no text output to hallucinate "
                   "in and no generate"),
    UnservedFamily(("evolla",), ("EvollaForProteinText2Text",),
                   "protein-text model, not vision-language: it takes protein sequences (protein_input_ids, no image "
                   "input), which reach the language model through cross-attention adapters"),
    UnservedFamily(("inkling2_loop",), ("Inkling2LoopForConditionalGeneration",),
                   "looped layers: the decoder layers from loop_layer_index_start to loop_layer_index_end run "
                   "loop_num_passes times in one forward, so such a layer has one attention map per pass, while "
                   "eahlib's per-layer sink densities and EAH's head choice take one per layer"),
    # --- group 4: rows above this line ---
    
)

GENERIC_FAMILY = ModelFamily(
    "generic", (), (), "model.language_model", "text_config", _IMAGE_IDS, ""
)
"""Tried for a model outside the table: the layout most recent transformers VLMs share."""


def _resolve(root: Any, path: str) -> Any:
    obj: Any = root
    for part in path.split(".") if path else ():
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def model_family(model: nn.Module) -> ModelFamily:
    """The table row for ``model`` (or the generic layout, if it fits, with a warning).

    Raises:
        ValueError: the family cannot be served (:data:`UNSERVED` says why), or the model is neither in the
            table nor shaped like a standard VLM.
    """
    class_name = type(model).__name__
    for family in FAMILIES:
        if class_name in family.architectures:
            return family
    for unserved in UNSERVED:
        if class_name in unserved.architectures:
            raise ValueError(f"eahlib cannot serve {class_name}: {unserved.reason}.")
    config = getattr(model, "config", None)
    has_image_token = any(getattr(config, a, None) is not None for a in GENERIC_FAMILY.image_token_attrs)
    if has_image_token and _resolve(model, GENERIC_FAMILY.language_model) is not None:
        model_type = getattr(config, "model_type", "?")
        # Raised here, not at the caller (eahlib looks the family up from many places): Python's default filter then
        # shows the message once per class however often and from wherever the model is looked up.
        warnings.warn(
            f"{class_name} is not in eahlib's family table; trying the generic layout (language model at "
            "`model.language_model`, sub-config `text_config`, image tokens from `image_token_id`/"
            "`image_token_index`). If it works, add this row to eahlib.models.FAMILIES so it is tested: "
            f"ModelFamily({model_type!r}, ({model_type!r},), ({class_name!r},), \"model.language_model\", "
            f"\"text_config\", _IMAGE_IDS, \"<hub checkpoint>\").",
        )
        return GENERIC_FAMILY
    supported = ", ".join(a for f in FAMILIES for a in f.architectures)
    raise ValueError(
        f"Unsupported model class {class_name}: it is not in eahlib's family table ({supported}) and does not "
        "look like a standard vision-language model (an image-token id in its config and a decoder at "
        "`model.language_model`). Add a ModelFamily row to eahlib.models.FAMILIES for it."
    )


def language_model(model: nn.Module) -> nn.Module:
    """The decoder-only language model inside a vision-language model."""
    family = model_family(model)
    module = _resolve(model, family.language_model)
    if module is None:
        raise ValueError(f"{type(model).__name__}: no language model at `{family.language_model}`.")
    return module


def output_embeddings(model: nn.Module) -> nn.Module:
    """The LM head: the full model's output embeddings, or else its language model's (a family whose language model
    is a whole causal LM at the top, as Nemotron-H Omni's, keeps the head there and exposes none itself).

    Raises:
        ValueError: neither has one.
    """
    head = model.get_output_embeddings()
    if head is None:
        head = language_model(model).get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head), in itself or its language model.")
    return head


def text_config(model: nn.Module) -> Any:
    """The language model's config object (shared with the language model module)."""
    family = model_family(model)
    config = model.config if family.text_config is None else _resolve(model.config, family.text_config)
    if config is None:
        raise ValueError(f"{type(model).__name__}: config has no `{family.text_config}`.")
    return config


def decoder(model: nn.Module) -> nn.Module:
    """The decoder stack of the language model (the module that owns ``.layers``).

    Raises:
        ValueError: the language model is an encoder-decoder (BLIP-2's Flan-T5 checkpoints, say), or has no
            ``.layers`` list.
    """
    lm = language_model(model)
    if getattr(getattr(lm, "config", None), "is_encoder_decoder", False):
        checkpoint = model_family(model).checkpoint
        raise ValueError(
            f"{type(model).__name__}'s language model {type(lm).__name__} is an encoder-decoder: the prompt and its "
            "image tokens go through the encoder and reach the generated tokens only through cross-attention, so "
            "eahlib's sink definitions and EAH (self-attention of a decoder-only language model over the image "
            "tokens) do not apply. Use a checkpoint of the family with a decoder-only language model"
            + (f" (e.g. {checkpoint})." if checkpoint else ".")
        )
    for candidate in (lm, lm.get_decoder() if hasattr(lm, "get_decoder") else None):
        if isinstance(getattr(candidate, "layers", None), nn.ModuleList):
            return candidate
    raise ValueError(f"{type(model).__name__}: the language model {type(lm).__name__} has no `.layers` list of decoder "
                     "layers.")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, in order."""
    return decoder(model).layers


def _self_attention(layer: nn.Module, family: ModelFamily) -> nn.Module | None:
    """The decoder layer's self-attention module, or ``None`` (a hybrid model's convolution, recurrent or MLP layer)."""
    module = getattr(layer, family.attention, None)
    if module is None or (family.attention_types and type(module).__name__ not in family.attention_types):
        return None
    return module


def attention_layers(model: nn.Module) -> list[int]:
    """Indices of the decoder layers that have self-attention (all of them, except in hybrid models)."""
    family = model_family(model)
    return [i for i, layer in enumerate(decoder_layers(model)) if _self_attention(layer, family) is not None]


def layers_at_depth(model: nn.Module, depth: Sequence[float]) -> list[int]:
    """The attention layers in a slice of the language model's depth, given as fractions.

    Published layer ranges are written for 32-layer LLaMA; as fractions they mean something at any depth. With
    ``L`` attention layers (every decoder layer except a hybrid model's convolution or recurrent layers), the
    ``i``-th of them (0-based) covers the share ``[i / L, (i + 1) / L)`` of the depth and is chosen when the
    middle of its share lies in the slice: ``start <= (i + 1/2) / L < end``. If no middle does (a slice
    thinner than one layer), the one layer whose middle is nearest the slice's middle is chosen (the lower
    on a tie). On 32 layers, ``[k / 32, m / 32)`` gives exactly layers ``k .. m - 1``.

    Args:
        model: a supported vision-language model.
        depth: ``(start, end)`` with ``0 <= start < end <= 1``.

    Returns:
        Decoder-layer indices, ascending, never empty.
    """
    if len(depth) != 2 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in depth):
        raise ValueError(f"depth must be two fractions (start, end) of the language model's depth, got {depth!r}.")
    start, end = float(depth[0]), float(depth[1])
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"depth must satisfy 0 <= start < end <= 1, got start={start}, end={end}.")
    layers = attention_layers(model)
    middles = [(i + 0.5) / len(layers) for i in range(len(layers))]
    inside = [layer for layer, middle in zip(layers, middles) if start <= middle < end]
    if inside:
        return inside
    centre = (start + end) / 2
    return [min(zip(layers, middles), key=lambda pair: abs(pair[1] - centre))[0]]


def choose_layers(model: nn.Module, depth: Sequence[float], layers: Sequence[int] | None) -> list[int]:
    """An intervention's layers: ``layers`` (decoder-layer indices, each with attention) if given, else
    :func:`layers_at_depth` of ``depth``.

    Returns:
        Decoder-layer indices (negative ones counted from the end), ascending.
    """
    if layers is None:
        return layers_at_depth(model, depth)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers must be a non-empty list of decoder-layer indices (or None: by depth), got {layers!r}.")
    for layer in layers:
        attention_module(model, layer)  # refuses a layer out of range or without attention, naming the valid ones
    return sorted({layer % len(decoder_layers(model)) for layer in layers})


def attention_module(model: nn.Module, layer: int) -> nn.Module:
    """The self-attention module of decoder layer ``layer`` (0-based; negative counts from the end).

    Raises:
        IndexError: ``layer`` is out of range.
        ValueError: the layer has no self-attention (a hybrid model's convolution or linear-attention layer).
    """
    layers = decoder_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not -len(layers) <= layer < len(layers):
        raise IndexError(
            f"layer={layer!r} is out of range: the language model has {len(layers)} decoder layers "
            f"(valid: 0..{len(layers) - 1})."
        )
    attention = _self_attention(layers[layer], model_family(model))
    if attention is None:
        raise ValueError(
            f"Decoder layer {layer % len(layers)} of {type(model).__name__} has no self-attention (a hybrid model's "
            f"{type(layers[layer]).__name__} without softmax attention); its attention layers are "
            f"{attention_layers(model)}."
        )
    return attention


def head_count(model: nn.Module, layer: int | None = None) -> int:
    """Number of attention (query) heads of language-model layer ``layer``; without one, the most heads of any
    attention layer (layers differ where the config has per-layer overrides, as dots3's sliding-window layers)."""
    layers = text_config(model).per_layer_config
    if layer is not None:
        return int(layers[layer].num_attention_heads)
    return max(int(layers[i].num_attention_heads) for i in attention_layers(model))


def head_dim(model: nn.Module, layer: int) -> int:
    """Width of one head's output in decoder layer ``layer``, as its output projection takes it in: the
    projection's input width over the layer's heads (MLA's value heads differ from ``config.head_dim``), or the
    config's ``head_dim`` (else hidden size / heads) for a projection without ``in_features``."""
    heads = head_count(model, layer)
    width = getattr(output_projection(model, layer), "in_features", None)
    if isinstance(width, int) and width % heads == 0:
        return width // heads
    config = text_config(model)
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else int(config.hidden_size) // heads


def uniform_heads(model: nn.Module, layers: Sequence[int], method: str) -> tuple[int, int]:
    """``(heads, head width)`` shared by ``layers``, for a method that compares heads across layers.

    Raises:
        ValueError: the layers differ (per-layer attention configs, e.g. dots3's sliding-window layers).
    """
    shapes = {layer: (head_count(model, layer), head_dim(model, layer)) for layer in layers}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{method} compares heads across layers, but these layers have different (heads, head width): "
                         f"{shapes}; choose layers of one shape.")
    return next(iter(shapes.values()))


def output_projection(model: nn.Module, layer: int) -> nn.Module:
    """The output projection of decoder layer ``layer``'s self-attention: its input holds the heads' outputs
    side by side, ``[B, q, H * d]``, the place to read or change one head before the heads are mixed.

    Raises:
        ValueError: the layer has no self-attention, or its attention has no such projection.
    """
    name = model_family(model).output_projection
    projection = getattr(attention_module(model, layer), name, None)
    if not isinstance(projection, nn.Module):
        raise ValueError(
            f"Layer {layer}'s attention ({type(attention_module(model, layer)).__name__}) has no output projection "
            f"`{name}`, so its output cannot be split by head; set the family's `output_projection` in "
            "eahlib.models.FAMILIES."
        )
    return projection


def image_token_ids(model: nn.Module) -> list[int]:
    """Ids of the visual tokens (image, and video where the family has one) in the prompt."""
    family = model_family(model)
    configs = [model.config, text_config(model)]
    ids = {int(v) for a in family.image_token_attrs for c in configs if (v := _resolve(c, a)) is not None}
    if not ids:
        raise ValueError(
            f"{type(model).__name__}: none of the config attributes {family.image_token_attrs} is set, so image "
            "tokens cannot be located in input_ids (a checkpoint that feeds image features without image "
            "tokens in the prompt cannot be served)."
        )
    return sorted(ids)


def image_token_mask(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Which prompt positions are image tokens.

    Args:
        model: a supported vision-language model.
        input_ids: ``[B, N]`` token ids as produced by the model's processor (image placeholders
            already expanded to one token per image feature).

    Returns:
        ``[B, N]`` bool.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got {list(input_ids.shape)}.")
    ids = torch.tensor(image_token_ids(model), device=input_ids.device)
    return torch.isin(input_ids, ids)


BUILTIN_MODELS: dict[str, str] = {
    "organism": "eahlib.organism:load_organism",
    "organism-smollm2": "eahlib.organism.smollm2:load_organism_smollm2",
    "tiny-random-llava": "eahlib.testing:tiny_llava_pipeline",
}
"""Models built in code by eahlib (no download), by name: ``module:function`` returning
``(model, processor)``."""


def load_model(
    name_or_path: str,
    dtype: torch.dtype | str = "auto",
    device_map: str | dict[str, Any] | None = None,
    attn_implementation: str = "sdpa",
    **kwargs: Any,
) -> tuple[nn.Module, Any]:
    """Load a supported checkpoint and its processor from the Hugging Face Hub (or a local path).

    Downloads are cached by ``huggingface_hub``. Tests never call this for hub checkpoints.

    Args:
        name_or_path: e.g. ``"llava-hf/llava-1.5-7b-hf"``, or a name of :data:`BUILTIN_MODELS`.
        dtype: torch dtype or ``"auto"`` (the checkpoint's).
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads over GPUs with accelerate).
        attn_implementation: the attention of every layer EAH does not touch.
        **kwargs: more ``from_pretrained`` arguments.

    Returns:
        ``(model, processor)``, the model in eval mode.
    """
    import transformers

    if name_or_path in BUILTIN_MODELS:
        if kwargs:
            raise TypeError(f"load_model({name_or_path!r}) builds the model in code and takes dtype and device_map only; "
                            f"got {sorted(kwargs)} (from_pretrained arguments apply to hub checkpoints).")
        module_name, function = BUILTIN_MODELS[name_or_path].split(":")
        model, processor = getattr(importlib.import_module(module_name), function)()
        if dtype != "auto":
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        if isinstance(device_map, str) and device_map != "auto":
            model = model.to(device_map)
        return model.eval(), processor
    model_type = transformers.AutoConfig.from_pretrained(name_or_path).model_type
    auto_class = family_of_model_type(model_type).auto_class
    model = getattr(transformers, auto_class).from_pretrained(
        name_or_path, dtype=dtype, device_map=device_map, attn_implementation=attn_implementation, **kwargs
    )
    model_family(model)
    processor = transformers.AutoProcessor.from_pretrained(name_or_path)
    return model.eval(), processor


def family_of_model_type(model_type: str) -> ModelFamily:
    """The table row for a checkpoint's ``config.model_type`` (before any weights are downloaded).

    Raises:
        ValueError: the family cannot be served (with the reason from :data:`UNSERVED`).
    """
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    for unserved in UNSERVED:
        if model_type in unserved.model_types:
            raise ValueError(f"eahlib cannot serve model type {model_type!r}: {unserved.reason}.")
    return GENERIC_FAMILY
