"""Interventions: context managers that change the language model's attention while any decoder runs.

Each module holds one method and registers it as an ``"intervention"`` component, so it composes
with every decoder of :mod:`eahlib.methods` by name (``"eah+beam"``): EAH (:mod:`.eah`), head
ablation (:mod:`.ablation`) and VAR (:mod:`.var`). Every intervention restores the model in ``finally`` and removes only what
it installed.
"""

from eahlib.interventions.ablation import ablate_heads
from eahlib.interventions.eah import PRESETS, EnhancedHeads, broadcast_head, enhance_attention_heads
from eahlib.interventions.var import (
    VarRecord,
    VisualAttentionRedistribution,
    redistribute_attention,
    redistribute_visual_attention,
    var_sink_tokens,
)

__all__ = [
    "PRESETS",
    "EnhancedHeads",
    "VarRecord",
    "VisualAttentionRedistribution",
    "ablate_heads",
    "broadcast_head",
    "enhance_attention_heads",
    "redistribute_attention",
    "redistribute_visual_attention",
    "var_sink_tokens",
]
