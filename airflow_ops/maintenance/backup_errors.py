"""The one error type of the backup actions."""

from __future__ import annotations


class BackupError(Exception):
    """A backup action cannot be planned or carried out. The message is phrased for the operator
    (which argument, file, database or tool, and what to do) and never holds a secret."""
