"""The registry of method components and the :class:`Method` that composes them."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn


@dataclass
class Generation:
    """Output of one batched generation.

    Attributes:
        tokens: ``[B, T]`` the new tokens only (prompt removed), padded with the pad id.
        extras: one dict per sample of method-specific facts to record (e.g. the EAH head).
    """

    tokens: Tensor
    extras: list[dict[str, Any]]


@dataclass(frozen=True)
class Component:
    """One selectable piece of a method.

    Attributes:
        name: the name used in method specs (``"eah"``, ``"beam"``...).
        kind: ``"intervention"`` (``run(model, **params)`` is a context manager yielding a
            recorder with ``extras(batch_size) -> list[dict]``) or ``"decoder"``
            (``run(model, inputs, max_new_tokens, **params) -> Tensor`` of new tokens).
        run: the entry point.
        defaults: published default parameters.
        reference: the paper, for the record.
        composes_with: decoders an intervention may be combined with (``None``: all).
        description: one line on what it does, shown by ``python -m eahlib.bench methods`` and ``--help``.
    """

    name: str
    kind: Literal["intervention", "decoder"]
    run: Callable[..., Any]
    defaults: Mapping[str, Any]
    reference: str
    composes_with: tuple[str, ...] | None = None
    description: str = ""


class NoRecord:
    """The recorder of an intervention with nothing to record per sample."""

    def extras(self, batch: int) -> list[dict[str, Any]]:
        return [{} for _ in range(batch)]


COMPONENTS: dict[str, Component] = {}

BUILTIN_MODULES: tuple[str, ...] = (
    "eahlib.methods.builtin", "eahlib.methods.pai", "eahlib.methods.vcd", "eahlib.methods.dola",
    "eahlib.methods.opera", "eahlib.interventions.eah", "eahlib.interventions.ablation", "eahlib.interventions.var",
    "eahlib.interventions.vhr", "eahlib.interventions.vaf", "eahlib.interventions.heads_guided",
)
"""Modules that register the shipped components when imported (one module per method): decoders in
``eahlib.methods``, interventions in ``eahlib.interventions``."""


def components() -> dict[str, Component]:
    """Every registered component by name, after importing the shipped ones: decoders, then interventions, each
    by name (the same order whichever module was imported first)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(sorted(COMPONENTS.items(), key=lambda item: (item[1].kind, item[0])))


def register(component: Component) -> Component:
    """Add a component to the registry (names are unique)."""
    if component.name in COMPONENTS:
        raise ValueError(f"A method component named {component.name!r} is already registered.")
    COMPONENTS[component.name] = component
    return component


@dataclass(frozen=True)
class Method:
    """A decoder, optionally under an intervention, with its parameters resolved."""

    decoder: Component
    intervention: Component | None = None
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.decoder.name if self.intervention is None else f"{self.intervention.name}+{self.decoder.name}"

    def settings(self) -> dict[str, Any]:
        """Name and every parameter in effect (JSON-serialisable), for result records."""
        parts = [c for c in (self.intervention, self.decoder) if c is not None]
        return {"method": self.name, **{c.name: dict(self.params.get(c.name, {})) for c in parts}}

    @contextlib.contextmanager
    def _intervening(self, model: nn.Module) -> Iterator[Any]:
        if self.intervention is None:
            yield None
        else:
            with self.intervention.run(model, **self.params[self.intervention.name]) as recorder:
                yield recorder

    def generate(self, model: nn.Module, inputs: Mapping[str, Tensor], max_new_tokens: int) -> Generation:
        """Generate for one left-padded batch; returns the new tokens and per-sample extras."""
        batch = int(inputs["input_ids"].shape[0])
        with self._intervening(model) as recorder:
            tokens = self.decoder.run(model, inputs, max_new_tokens, **self.params[self.decoder.name])
        extras = recorder.extras(batch) if recorder is not None else [{} for _ in range(batch)]
        return Generation(tokens, extras)


def _check_params(component: Component, given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(component.defaults))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {unknown} for method component {component.name!r}; "
            f"it takes {sorted(component.defaults)}."
        )
    return {**component.defaults, **given}


def resolve_method(spec: str, params: Mapping[str, Mapping[str, Any]] | None = None) -> Method:
    """Parse ``"decoder"`` or ``"intervention+decoder"`` (either order) into a :class:`Method`.

    Args:
        spec: e.g. ``"greedy"``, ``"beam"``, ``"eah"`` (= ``"eah+greedy"``), ``"eah+beam"``.
        params: per-component parameter overrides, e.g. ``{"eah": {"layer": 1}}``.

    Returns:
        The resolved method.
    """
    known = components()
    params = dict(params or {})
    names = [n.strip() for n in spec.split("+") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        decoders = sorted(n for n, c in known.items() if c.kind == "decoder")
        interventions = sorted(n for n, c in known.items() if c.kind == "intervention")
        raise ValueError(
            f"Unknown method {spec!r}: {unknown or 'empty'}. A method is a decoder {decoders}, optionally "
            f"joined with '+' to an intervention {interventions} (e.g. 'eah+beam'); "
            "`python -m eahlib.bench methods` describes each."
        )
    parts = [COMPONENTS[n] for n in names]
    decoders = [c for c in parts if c.kind == "decoder"]
    interventions = [c for c in parts if c.kind == "intervention"]
    if len(decoders) > 1 or len(interventions) > 1:
        raise ValueError(f"Method {spec!r} combines {names}: use at most one intervention and one decoder.")
    decoder = decoders[0] if decoders else COMPONENTS["greedy"]
    intervention = interventions[0] if interventions else None
    if intervention is not None and intervention.composes_with is not None and decoder.name not in intervention.composes_with:
        raise ValueError(
            f"{intervention.name!r} does not compose with {decoder.name!r}; it composes with {list(intervention.composes_with)}."
        )
    extra = sorted(set(params) - {c.name for c in (decoder, intervention) if c is not None})
    if extra:
        raise ValueError(f"Parameters given for {extra}, which are not part of method {spec!r}.")
    resolved = {c.name: _check_params(c, params.get(c.name, {})) for c in (decoder, intervention) if c is not None}
    return Method(decoder, intervention, resolved)
