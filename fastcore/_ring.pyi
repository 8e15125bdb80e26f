# The native ring is typed through its twin: same class surface, same behaviour.
from fastcore._ring_py import HashRing as HashRing

__all__ = ["HashRing"]
