"""Human rendering of results: text tables, plots, series plots and the HTML report.

Nothing under :mod:`subnetscope.results`, the measures, the engine, io or kernels imports this package.
"""
