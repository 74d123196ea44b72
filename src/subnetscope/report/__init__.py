"""Compatibility package: :mod:`subnetscope.report.schema` re-exports :mod:`subnetscope.results.schema`.

Results live in :mod:`subnetscope.results`, human rendering (tables, plots, HTML) in :mod:`subnetscope.render`.
"""
