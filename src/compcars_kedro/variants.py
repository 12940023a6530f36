"""A pipeline's variant chains: how ``RayRunner`` splits a run and the MLflow hook counts it.

Nodes in a top-level namespace form that *variant*'s chain (the grid names each chain after its
variant, ``pipelines/grid``); nodes outside every namespace, and namespaces other namespaces read
from (the grid's ``split_ss<seed>`` tables), are *shared*. Kedro only, no Ray and no MLflow, so
both :mod:`compcars_kedro.ray_runner` and :mod:`compcars_kedro.mlflow_runs` can import it.
"""

from __future__ import annotations

import inspect
from typing import Any

from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node


def split_pipeline(pipeline: Pipeline) -> tuple[Pipeline, dict[str, Pipeline], Pipeline]:
    """(shared nodes before, {variant: its chain}, shared nodes after).

    A variant is a top-level namespace that no other namespace reads from; a namespace others
    read from (e.g. the grid's ``split_ss<seed>`` split tables) is shared, like un-namespaced
    nodes.
    """
    groups: dict[str, list[Node]] = {}
    shared: list[Node] = []
    for n in pipeline.nodes:
        if n.namespace:
            groups.setdefault(n.namespace.split(".")[0], []).append(n)
        else:
            shared.append(n)
    deps = pipeline.node_dependencies
    group_of = {n: g for g, nodes in groups.items() for n in nodes}
    feeders = {group_of[p] for n, parents in deps.items() for p in parents
               if p in group_of and n in group_of and group_of[n] != group_of[p]}
    variants = {g: nodes for g, nodes in groups.items() if g not in feeders}
    shared = [n for n in pipeline.nodes if n not in group_of or group_of[n] in feeders]
    variant_nodes = {n for nodes in variants.values() for n in nodes}
    after: set[Node] = set()
    for n in pipeline.nodes:  # topological order: parents are classified first
        if n in variant_nodes:
            continue
        if any(p in variant_nodes or p in after for p in deps[n]):
            after.add(n)
    before = [n for n in shared if n not in after]
    for name, nodes in variants.items():
        for n in nodes:
            if any(p in after for p in deps[n]):
                raise ValueError(f"variant {name}: node {n.name} depends on a shared node that "
                                 "itself needs a variant's output; RayRunner cannot order it")
    return (Pipeline(before), {k: Pipeline(v) for k, v in sorted(variants.items())},
            Pipeline([n for n in shared if n in after]))


def variant_of(chain: Pipeline) -> Any:
    """The :class:`~compcars_kedro.grid.Variant` bound into the chain's status node, if any."""
    for n in chain.nodes:
        func = n.func
        try:
            bound = inspect.getclosurevars(func).nonlocals.get("variant")
        except (TypeError, ValueError):
            continue
        if bound is not None and hasattr(bound, "keys"):
            return bound
    return None

