"""Decoding methods selectable by name, composable as ``"intervention+decoder"``.

A method is at most one *intervention* (a context manager that changes the model while it
generates, e.g. ``eah``) and one *decoder* (how tokens are chosen, e.g. ``greedy``, ``beam``).
``resolve_method("eah+beam", {"eah": {"layer": 1}})`` returns a :class:`Method` whose
``settings()`` record every parameter in effect; nothing changes any code path for a method
that is not selected.
"""

from eahlib.methods.registry import COMPONENTS, Component, Generation, Method, components, register, resolve_method

__all__ = ["COMPONENTS", "Component", "Generation", "Method", "components", "register", "resolve_method"]
