"""Which split a generated problem belongs to, shared by the generated tasks (``synthetic.py``'s
arithmetic and ``countdown.py``) without either importing the other."""
from __future__ import annotations

import hashlib

TEST_FRACTION_BUCKETS = 10
"""One problem in ``TEST_FRACTION_BUCKETS`` (by text hash) belongs to the test split."""

SPLITS = ("train", "test")


def split_of(problem_text: str) -> str:
    """The split a problem text belongs to: a stable SHA-256 bucket of the text (not ``hash()``)."""
    digest = hashlib.sha256(problem_text.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % TEST_FRACTION_BUCKETS
    return "test" if bucket == 0 else "train"
