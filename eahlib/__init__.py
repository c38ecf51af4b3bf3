"""eahlib: vision sinks and Enhanced Attention Heads (EAH) in Hugging Face vision-language models.

Pure sink metrics (tensor in, tensor out), the EAH and VHR interventions, vision-aware head divergence
beside sink density, attention capture through transformers' ``AttentionInterface``, one declarative
table of model families, and benchmarks.
"""

import sys

from eahlib.attention import AttentionCapture, capture_attention
from eahlib.divergence import HeadDivergence, head_views, vision_head_divergence
from eahlib.interventions import ablation, eah
from eahlib.interventions.ablation import ablate_heads
from eahlib.interventions.eah import PRESETS, EnhancedHeads, broadcast_head, enhance_attention_heads
from eahlib.interventions.heads_guided import guide_attention_by_heads
from eahlib.interventions.vaf import amplify_visual_attention
from eahlib.interventions.vhr import VisionHeadReinforcement, reinforce_vision_heads
from eahlib.interventions.var import VisualAttentionRedistribution, redistribute_visual_attention
from eahlib.metrics import (
    MASSIVE_ACTIVATION_DIMS,
    SinkCriterion,
    massive_activation_sinks,
    normalised_magnitude,
    received_attention,
    sink_criterion,
    sink_density,
    sink_mask,
    uniform_received_attention,
)
from eahlib.methods import resolve_method
from eahlib.models import (
    FAMILIES,
    ModelFamily,
    attention_layers,
    decoder_layers,
    head_count,
    image_token_mask,
    load_model,
    model_family,
)
from eahlib.profile import SinkProfile, sink_profile, threshold_sweep

__all__ = [
    "FAMILIES",
    "MASSIVE_ACTIVATION_DIMS",
    "PRESETS",
    "AttentionCapture",
    "EnhancedHeads",
    "HeadDivergence",
    "ModelFamily",
    "SinkCriterion",
    "SinkProfile",
    "VisionHeadReinforcement",
    "VisualAttentionRedistribution",
    "ablate_heads",
    "amplify_visual_attention",
    "attention_layers",
    "broadcast_head",
    "capture_attention",
    "decoder_layers",
    "enhance_attention_heads",
    "guide_attention_by_heads",
    "head_count",
    "head_views",
    "image_token_mask",
    "load_model",
    "massive_activation_sinks",
    "model_family",
    "normalised_magnitude",
    "received_attention",
    "reinforce_vision_heads",
    "redistribute_visual_attention",
    "resolve_method",
    "sink_criterion",
    "sink_density",
    "sink_mask",
    "sink_profile",
    "threshold_sweep",
    "uniform_received_attention",
    "vision_head_divergence",
]
__version__ = "0.1.0"

# EAH and head ablation lived at the package top before eahlib.interventions existed; both import paths work.
sys.modules.setdefault("eahlib.eah", eah)
sys.modules.setdefault("eahlib.ablation", ablation)
