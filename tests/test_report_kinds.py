"""The report-kind table (results/kinds.py) and the renderer table (render/dispatch.py) agree with the code."""

from __future__ import annotations

import importlib

import pytest

from subnetscope.errors import SubnetscopeError
from subnetscope.render.dispatch import HTML_KINDS, PLOTTERS
from subnetscope.results.kinds import REPORT_KINDS, report_kind

#: kind -> the module constant that writes it into "report" (one per producer)
WRITTEN_AS = {
    "subnetscope.compare": ("subnetscope.results.schema", "REPORT_KIND"),
    "subnetscope.rank": ("subnetscope.anatomy.rank", "REPORT_KIND"),
    "subnetscope.series": ("subnetscope.results.series", "REPORT_KIND"),
    "subnetscope.tracker": ("subnetscope.train.tracker", "REPORT_KIND"),
    "subnetscope.overlap": ("subnetscope.results.overlap", "REPORT_KIND"),
    "subnetscope.conjecture": ("subnetscope.train.sub_vs_full", "REPORT_KIND"),
    "subnetscope.mask": ("subnetscope.results.mask", "REPORT_KIND"),
}


def test_the_table_lists_nine_kinds_each_under_its_own_string():
    assert len(REPORT_KINDS) == 9
    assert all(k == v.kind for k, v in REPORT_KINDS.items())
    assert {"subnetscope.delta_export", "subnetscope.delta_apply"} <= set(REPORT_KINDS)


@pytest.mark.parametrize("kind", sorted(WRITTEN_AS))
def test_each_kind_is_the_string_its_producer_writes(kind):
    module, const = WRITTEN_AS[kind]
    assert getattr(importlib.import_module(module), const) == kind


@pytest.mark.parametrize("kind", sorted(REPORT_KINDS))
def test_each_result_type_exists(kind):
    entry = REPORT_KINDS[kind]
    t = entry.result_type()
    assert t.__name__ == entry.type_name
    assert hasattr(t, "from_json") == entry.loadable


def test_unknown_and_missing_kinds_are_refused_by_name():
    with pytest.raises(
        SubnetscopeError, match=r"x\.json: report kind 'subnetscope\.nope' is not one subnetscope"
    ):
        report_kind({"report": "subnetscope.nope"}, where="x.json")
    with pytest.raises(SubnetscopeError, match=r"the report: report kind None is not one") as e:
        report_kind({"schema_version": "1.0"})
    assert "subnetscope.compare" in (e.value.hint or "")
    with pytest.raises(SubnetscopeError, match="report kind 3 is not one"):
        report_kind({"report": 3})


def test_a_kind_without_from_json_is_not_read_back():
    with pytest.raises(
        SubnetscopeError, match=r"a subnetscope\.series report cannot be read back into a SeriesReport"
    ):
        REPORT_KINDS["subnetscope.series"].load({"report": "subnetscope.series"})


def test_the_renderer_table_names_known_kinds_and_real_functions():
    assert set(PLOTTERS) | set(HTML_KINDS) <= set(REPORT_KINDS)
    assert set(PLOTTERS) == {
        "subnetscope.compare",
        "subnetscope.rank",
        "subnetscope.series",
        "subnetscope.tracker",
    }
    for module, name in PLOTTERS.values():
        assert callable(getattr(importlib.import_module(module), name))
