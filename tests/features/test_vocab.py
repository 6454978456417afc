"""Raw ids → codes (features/vocab.py): the integer fast path, the text path, missing ids."""

import numpy as np
import pyarrow as pa
import pytest

from seqops.features.vocab import IdEncoder, _factorize_ints


def test_numeric_ids_with_blanks_stay_on_the_integer_path():
    encoder = IdEncoder()
    assert encoder.add(pa.array(["10", None, "7", "10"])).tolist() == [False, True, False, False]
    assert encoder.add(pa.array(["7", " ", "u9"])).tolist() == [False, True, False]  # text: " " blank
    codes, uniques = encoder.finish()
    assert [uniques[c].as_py() if c >= 0 else None for c in codes] == ["10", None, "7", "10", "7", None, "u9"]
    assert encoder.parts[0][1] is None  # the first block took the integer path


@pytest.mark.parametrize("values", [[5, -1, 3, 5, 7], [5, -1, 3, 5, 10**12]])  # a lookup table, then a hash table
def test_factorize_ints_keeps_missing_ids_missing(values):
    uniques, codes = _factorize_ints(np.array(values, dtype=np.int64))
    assert [int(uniques[c]) if c >= 0 else -1 for c in codes] == values
    assert sorted(uniques.tolist()) == sorted(set(values) - {-1})
