"""Update anatomy: what the changes look like, beyond how many there are.

- :mod:`.ulp`: change size in ULPs of the stored dtype, a log-binned |Δ| histogram (any tolerance answered
  afterwards), step sizes the dtype would round away, weights that could not have moved by less than the
  tolerance; computed in the same streaming pass as compare (a :class:`~subnetscope.measures.compare.ChunkConsumer`).
- :mod:`.rank`: numerical rank, stable rank and effective rank of every 2-D weight update.
- :mod:`.spectrum`: where the update falls relative to the base weight's principal components.
"""
