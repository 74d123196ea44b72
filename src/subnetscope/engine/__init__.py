"""The streaming engine: one read loop that every pass rides.

A pass is a :class:`~subnetscope.engine.job.Job`: rows (one tensor across the pass's inputs), read in
chunks by :mod:`~subnetscope.engine.worker`, handed to consumers that return small mergeable partials,
merged and finished on the driver (:class:`~subnetscope.engine.job.Reducer`), on any executor of
:mod:`~subnetscope.engine.executors` (serial, threads, processes, Ray; one ``auto`` policy). The measures
(:mod:`subnetscope.measures`) build jobs; resumable runs keep finished rows in a journal
(:mod:`~subnetscope.engine.resume`). Nothing here imports a measure, a renderer or the CLI.
"""
