"""DataWriter under concurrent appends: every record points at its own bytes, files roll over at the size
limit, and each file's recorded size and sha256 are those of the file on disk."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from subnetscope.delta.encode import EncodedChunk
from subnetscope.delta.store import DataReader, DataWriter


def test_concurrent_appends_roll_over_and_hash_what_is_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [
        EncodedChunk(
            i,
            "bitmap",
            "raw",
            rng.bytes(int(rng.integers(0, 300))),
            "raw",
            rng.bytes(int(rng.integers(1, 900))),
        )
        for i in range(400)
    ]
    writer = DataWriter(tmp_path, max_file_bytes=20_000)
    with ThreadPoolExecutor(8) as ex:
        records = list(ex.map(lambda ie: writer.append(ie[0], ie[1]), enumerate(chunks)))
    files = writer.close()
    assert len(files) > 10
    for f in files:
        data = (tmp_path / f.name).read_bytes()
        assert f.bytes == len(data) <= 20_000
        assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(f.bytes for f in files) == sum(len(c.pos_blob) + len(c.val_blob) for c in chunks)
    with DataReader(tmp_path, files) as reader:
        for c, rec in zip(chunks, records):
            assert reader.blobs(rec) == (c.pos_blob, c.val_blob)
