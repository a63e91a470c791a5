"""What the exporters/ tests share: each target's shipped files read and its config materialized
as the target would see it. Used by tests/unit/test_exporters_*.py and
tests/integration/test_exporters.py, imported as ``tests.exporters_support.<target>`` (pytest's
``pythonpath = ["."]`` puts the repository root on sys.path; ``tests`` is a namespace package).
"""

import pytest

# Their asserts report like the tests' own (pytest rewrites only test modules unless told).
pytest.register_assert_rewrite(
    "tests.exporters_support.docker",
    "tests.exporters_support.kubernetes",
    "tests.exporters_support.systemd",
)
