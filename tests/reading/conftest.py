"""Reading tests reuse the core tests' small models (``tests/core/families.py``)."""

import sys
from pathlib import Path

for _dir in (Path(__file__).resolve().parents[1] / "core", Path(__file__).resolve().parent):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))
