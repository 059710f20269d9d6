"""Data loading shared by every task."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data (an unreadable image, a malformed annotation file).

    The message is one line meant for the user: it names the file (and the record) and says what to do.
    """
