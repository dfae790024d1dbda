"""The RASP programs of the Tracr paper and library, with small input domains to test them on.

Each program is built from ``tracr.compiler.lib`` and compiled once per test module (compiling
costs 1-3 s each on a loaded machine, most of it haiku initialising weights Tracr then
overwrites). A domain is every input up to ``max_len`` over the vocabulary, or, for
``sort_unique`` (whose keys must differ), every sequence of distinct values.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable

from jinterp import models


@dataclasses.dataclass(frozen=True)
class Program:
    """A RASP program builder, its vocabulary and the inputs it is checked on."""

    build: Callable[[int], object]  # max_seq_len -> the RASP SOp
    vocab: tuple
    max_seq_len: int = 4
    distinct: bool = False  # inputs must not repeat a value (sort_unique's keys)
    causal: bool = False

    def domain(self, max_len: int | None = None) -> list[list]:
        """Every input of length 1 .. ``max_len`` (default ``max_seq_len``)."""
        out = []
        for n in range(1, (max_len or self.max_seq_len) + 1):
            if self.distinct:
                out += [list(x) for x in itertools.permutations(self.vocab, n)]
            else:
                out += [list(x) for x in itertools.product(self.vocab, repeat=n)]
        return out


def _lib():
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib, rasp


def _reverse(_):
    lib, rasp = _lib()
    return lib.make_reverse(rasp.tokens)


def _sort(max_seq_len):
    lib, rasp = _lib()
    return lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=max_seq_len, min_key=1)


def _sort_unique(_):
    lib, rasp = _lib()
    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


def _hist(_):
    lib, _ = _lib()
    return lib.make_hist()


def _frac_prevs(_):
    lib, rasp = _lib()
    return lib.make_frac_prevs(rasp.tokens == 1)


def _pair_balance(_):
    lib, rasp = _lib()
    return lib.make_pair_balance(rasp.tokens, "(", ")")


def _shuffle_dyck(_):
    lib, _ = _lib()
    return lib.make_shuffle_dyck(["()"])


def _shuffle_dyck2(_):
    lib, _ = _lib()
    return lib.make_shuffle_dyck2()


#: The default suite's programs (about 15 s of Tracr compilation in all).
PROGRAMS: dict[str, Program] = {
    "reverse": Program(_reverse, (1, 2, 3)),
    "sort": Program(_sort, (1, 2, 3)),
    "sort_unique": Program(_sort_unique, (1, 2, 3, 4), distinct=True),
    "hist": Program(_hist, (1, 2, 3)),
    "frac_prevs": Program(_frac_prevs, (1, 2, 3)),
    "frac_prevs_causal": Program(_frac_prevs, (1, 2, 3), causal=True),
    "pair_balance": Program(_pair_balance, ("(", ")")),
    "shuffle_dyck": Program(_shuffle_dyck, ("(", ")")),
}

#: Larger programs and domains for ``@pytest.mark.full``.
FULL_PROGRAMS: dict[str, Program] = {
    "reverse_5": Program(_reverse, (1, 2, 3), max_seq_len=5),
    "sort_5": Program(_sort, (1, 2, 3, 4), max_seq_len=5),
    "hist_5": Program(_hist, (1, 2, 3, 4), max_seq_len=5),
    "shuffle_dyck2": Program(_shuffle_dyck2, ("(", ")", "{", "}")),
}


@dataclasses.dataclass(frozen=True)
class Compiled:
    """One program compiled by Tracr and converted to the jinterp port."""

    spec: Program
    program: object  # the RASP SOp
    assembled: object  # Tracr's AssembledTransformerModel
    model: models.GPT2
    params: dict
    io: models.TracrIO


@functools.cache
def compiled(name: str) -> Compiled:
    """``name``'s program compiled and converted (cached for the whole test session)."""
    spec = {**PROGRAMS, **FULL_PROGRAMS}[name]
    program = spec.build(spec.max_seq_len)
    assembled = models.compile_tracr(program, set(spec.vocab), spec.max_seq_len,
                                     causal=spec.causal)
    model, params, io = models.from_tracr(assembled)
    return Compiled(spec, program, assembled, model, params, io)
