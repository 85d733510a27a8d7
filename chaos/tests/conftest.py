"""Make the top-level ``bench`` and ``chaos`` packages importable from their tests.

They are tools run from the repository root (``python -m bench``), not installed packages,
and pytest's importlib mode does not put the root on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
