"""The lowered program, the contract between the compiler and the backends, lives in backends/lowered.py (the
backends import it without importing the compiler); its names are re-exported here for the compiler's modules."""

from ..backends.lowered import (  # noqa: F401
    ALIGN,
    BufferView,
    Const,
    Evaluator,
    LoweredProgram,
    LoweredStep,
    OutSlot,
)
