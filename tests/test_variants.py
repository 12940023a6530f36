"""A pipeline's variant chains: shared nodes around them, the Variant bound into a chain."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from compcars_kedro.grid import Variant
from compcars_kedro.variants import split_pipeline, variant_of


def _add(x: int) -> int:
    return x + 1


def _times(y: int, p: int) -> int:
    return y * p


def _total(*values: int) -> int:
    return sum(values)


def _toy() -> Pipeline:
    chain = Pipeline([node(_times, ["y", "params:p"], "out", name="times")])
    variants = [pipeline(chain, namespace=ns, inputs={"y"}, parameters={"params:p"})
                for ns in ("a", "b")]
    return (Pipeline([node(_add, "x", "y", name="up")]) + sum(variants, Pipeline([]))
            + Pipeline([node(_total, ["a.out", "b.out"], "total", name="collect")]))


def test_split_puts_shared_nodes_around_the_variants() -> None:
    before, variants, after = split_pipeline(_toy())
    assert [n.name for n in before.nodes] == ["up"]
    assert sorted(variants) == ["a", "b"]
    assert [n.name for n in variants["a"].nodes] == ["a.times"]
    assert [n.name for n in after.nodes] == ["collect"]
    assert split_pipeline(Pipeline([node(_add, "x", "y")]))[1] == {}
    # a namespace that variants read from (the grid's split_ss<seed> tables) is shared
    feeder = pipeline(Pipeline([node(_add, "x", "y", name="split")]), namespace="split_ss1",
                      inputs={"x"})
    chain = pipeline(Pipeline([node(_add, "y", "out", name="times")]), namespace="v",
                     inputs={"y": "split_ss1.y"})
    before, variants, after = split_pipeline(feeder + chain)
    assert [n.name for n in before.nodes] == ["split_ss1.split"] and list(variants) == ["v"]


def test_variant_of_finds_the_variant_bound_into_a_chain() -> None:
    variant = Variant("resnet18", "ce", "front+rear", 0)

    def status(x: int) -> dict:
        return {"variant": variant.name, "x": x}

    assert variant_of(Pipeline([node(status, "x", "s", name="status")])) is variant
    assert variant_of(Pipeline([node(_add, "x", "y")])) is None
