# The native ID core is typed through its twin: same class surface, same behaviour.
from fastcore._ids_py import SNOWFLAKE as SNOWFLAKE
from fastcore._ids_py import TRUETIME as TRUETIME
from fastcore._ids_py import IdCore as IdCore
from fastcore._ids_py import IdLayout as IdLayout
from fastcore._ids_py import RangeCounter as RangeCounter
from fastcore._ids_py import eps_bound_ms as eps_bound_ms
from fastcore._ids_py import eps_code as eps_code

__all__ = [
    "SNOWFLAKE",
    "TRUETIME",
    "IdCore",
    "IdLayout",
    "RangeCounter",
    "eps_bound_ms",
    "eps_code",
]
