"""Named models for command-line tools, found through the ``jinterp.presets`` entry points.

``jinterp`` never imports its ports (``jinterp.models``), yet ``python -m jinterp.plan --model
gemma2-27b`` needs a model from a string. Packages advertise presets in the entry-point group
:data:`GROUP`; each entry loads a function returning ``{name: builder}`` and
``builder(**config_overrides)`` returns a model. jinterp's own ports register
``jinterp.models.presets:presets`` (see ``pyproject.toml``); a package of new ports can add its
own entry without touching jinterp.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

GROUP = "jinterp.presets"


def normalise(name: str) -> str:
    """The comparison key of a name: ``gemma2-27b``, ``gemma-2-27b``, ``Gemma_2_27B`` agree."""
    return re.sub(r"[-_\s]", "", name.lower())


def registered() -> dict[str, Callable[..., Any]]:
    """Every preset of every installed ``jinterp.presets`` entry point (later ones win).

    Raises:
        RuntimeError: no entry point is installed (jinterp not installed with pip).
    """
    table: dict[str, Callable[..., Any]] = {}
    for entry in metadata.entry_points(group=GROUP):
        table.update(entry.load()())
    if not table:
        raise RuntimeError(f"no model presets are registered in the {GROUP!r} entry-point group; "
                           "install jinterp (`pip install -e .` in the repository) so that "
                           "jinterp.models registers its presets")
    return table


def lookup(name: str, table: Mapping[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The builder of ``name`` in ``table``, by exact name, else by :func:`normalise`.

    Raises:
        ValueError: no preset has this name; the message gives the closest valid names and
            the full list.
    """
    if name in table:
        return table[name]
    keyed = {normalise(k): k for k in table}
    if normalise(name) in keyed:
        return table[keyed[normalise(name)]]
    close = difflib.get_close_matches(normalise(name), list(keyed), n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(keyed[c] for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(table))}.")
