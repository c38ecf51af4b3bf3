"""Interventions: context managers that change the language model's attention while any decoder runs.

Each module holds one method and registers it as an ``"intervention"`` component, so it composes
with every decoder of :mod:`eahlib.methods` by name (``"eah+beam"``): EAH (:mod:`.eah`) and head
ablation (:mod:`.ablation`). Every intervention restores the model in ``finally`` and removes only what
it installed.
"""

from eahlib.interventions.ablation import ablate_heads
from eahlib.interventions.eah import PRESETS, EnhancedHeads, broadcast_head, enhance_attention_heads

__all__ = ["PRESETS", "EnhancedHeads", "ablate_heads", "broadcast_head", "enhance_attention_heads"]
