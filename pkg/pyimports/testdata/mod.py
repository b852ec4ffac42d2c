"""A module that imports in every way CPython compiles (pyimports tests)."""
import os, sys
import concurrent.futures
from json import decoder
from . import sibling
from .sub import thing
try:
    import _json
except ImportError:
    _json = None

__all__ = ["helper", "X"]


def helper():
    import late  # runs only when called: not a load-time import
    return late


X = 1.5 + 2j
BIG = 1 << 100
SETS = {1, 2}, frozenset({3})

if __name__ == "__main__":
    import doctest
    doctest.testmod()
