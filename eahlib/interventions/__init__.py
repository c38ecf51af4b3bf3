"""Interventions: context managers that change the language model's attention while any decoder runs.

Each module holds one method and registers it as an ``"intervention"`` component, so it composes
with every decoder of :mod:`eahlib.methods` by name (``"eah+beam"``): EAH (:mod:`.eah`), head
ablation (:mod:`.ablation`), and EAH's closest peers: VAR (:mod:`.var`), VHR (:mod:`.vhr`), VAF (:mod:`.vaf`) and
heads-guided attention (:mod:`.heads_guided`). Every intervention restores the model in ``finally`` and removes
only what it installed.
"""

from eahlib.interventions.ablation import ablate_heads
from eahlib.interventions.eah import PRESETS, EnhancedHeads, broadcast_head, enhance_attention_heads
from eahlib.interventions.heads_guided import HeadsGuidedAttention, guide_attention_by_heads, guide_by_heads
from eahlib.interventions.vaf import VisualAmplification, amplify_visual_attention, amplify_visual_logits
from eahlib.interventions.var import (
    VarRecord,
    VisualAttentionRedistribution,
    redistribute_attention,
    redistribute_visual_attention,
    var_sink_tokens,
)
from eahlib.interventions.vhr import VisionHeadReinforcement, reinforce_vision_heads, reinforced_layers

__all__ = [
    "PRESETS", "EnhancedHeads", "HeadsGuidedAttention", "VarRecord", "VisionHeadReinforcement", "VisualAmplification",
    "VisualAttentionRedistribution", "ablate_heads", "amplify_visual_attention", "amplify_visual_logits",
    "broadcast_head", "enhance_attention_heads", "guide_attention_by_heads", "guide_by_heads", "redistribute_attention",
    "redistribute_visual_attention", "reinforce_vision_heads", "reinforced_layers", "var_sink_tokens",
]
