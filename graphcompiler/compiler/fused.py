"""The fused ops the simplifier writes live in ops/fused.py (op records, which the backends dispatch on by class
without importing the compiler); re-exported here for the compiler's modules."""

from ..ops.fused import DotAll, MinusOneHot, PickMean  # noqa: F401
