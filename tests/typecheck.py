"""The runtime type checker jaxtyping applies to the project's code under pytest.

beartype with PEP 484's implicit numeric tower (an ``int`` is acceptable where a ``float`` is
annotated, as type checkers read it), so ``query_pre_attn_scalar=256`` passes a ``float``
field while a wrong shape or a string for a number still fails.
"""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
