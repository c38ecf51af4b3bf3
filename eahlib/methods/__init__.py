"""Decoding methods selectable by name, composable as ``"intervention+decoder"``; the decoders' home.

A method is at most one *intervention* (a context manager that changes the model while it
generates, e.g. ``eah``; they live in :mod:`eahlib.interventions`) and one *decoder* (how tokens
are chosen, e.g. ``greedy``, ``beam``, ``vcd``, ``pai``, ``dola``, ``opera``; they live here, one module
each, beside the :mod:`~eahlib.methods.registry`).
``resolve_method("eah+beam", {"eah": {"layer": 1}})`` returns a :class:`Method` whose
``settings()`` record every parameter in effect; nothing changes any code path for a method
that is not selected.
"""

from eahlib.methods.registry import COMPONENTS, Component, Generation, Method, components, register, resolve_method

__all__ = ["COMPONENTS", "Component", "Generation", "Method", "components", "register", "resolve_method"]
