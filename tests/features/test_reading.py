"""Streaming a file in blocks (features/blocks.py read_blocks, features/reading.py)."""

from seqops.config import IngestParams
from seqops.features.blocks import CSV_BLOCK_MB, read_blocks
from seqops.features.layouts import Malformed
from seqops.features.loaders import plan


def test_csv_blocks_stay_small_whatever_block_mb(tmp_path):
    """Issue 12: a CSV block larger than a few MiB parses slower (it leaves the CPU cache), so
    ingest.block_mb (16 by default) can lower the block size but not raise it past CSV_BLOCK_MB."""
    line = "1000001,2000002,3000003,pv,1511539200\n"
    rows = int(1.5 * CSV_BLOCK_MB * 2**20 / len(line))
    path = tmp_path / "UserBehavior.csv"
    path.write_text(line * rows)
    source = plan("taobao", path, IngestParams(format="taobao")).sources[0]
    blocks = [len(block["user"]) for block in read_blocks(source, Malformed(), block_mb=16)]
    assert sum(blocks) == rows and len(blocks) == 2
