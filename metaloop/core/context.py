"""Whether the code runs inside the ``vmap`` execution path.

The inner loop and the norms behave differently under ``torch.func.vmap``: gradients come from
``torch.func.grad`` (``torch.autograd.grad`` cannot see through ``vmap``), and norms are decomposed into
elementary ops (see :mod:`metaloop.core.norms`). The vmap executor sets this flag; nothing else should.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_VECTORIZED: ContextVar[bool] = ContextVar("metaloop_vectorized", default=False)


def is_vectorized() -> bool:
    """True inside :func:`vectorized`."""
    return _VECTORIZED.get()


@contextmanager
def vectorized() -> Iterator[None]:
    """Mark the enclosed code as running under ``vmap`` over tasks."""
    token = _VECTORIZED.set(True)
    try:
        yield
    finally:
        _VECTORIZED.reset(token)
