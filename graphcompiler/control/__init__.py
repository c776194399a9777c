"""Control flow: gc.scan, gc.cond and gc.while_loop, each a body traced once into a sub-graph of its own.

A layer above autodiff and the compiler: a construct compiles its bodies with compiler.compile and builds
its derivative with autodiff.build_grad, both imported. Neither of them imports this package; they reach a
control-flow node through its op record (has_body, vjp, kernel), as io.py does to write and read its body.

    body.py        tracing a body, what the constructs share (BodyOp, BodyGroup, Result, Results)
    scan.py        gc.scan, its reverse scan (backpropagation through time), the tapes of a bounded loop
    cond.py        gc.cond
    while_loop.py  gc.while_loop (bounded: a scan)
    unroll.py      a graph with its scans written out step by step (viz.to_dot(..., unroll=True))

The pictures of bodies are drawn by viz.py and a scan's recurrence is exported by symbolic.py.
"""

from .body import MAX_SCAN_LENGTH, Result, result
from .cond import Cond, cond
from .scan import Scan, scan
from .while_loop import MAX_WHILE_STEPS, While, while_loop

__all__ = [
    "MAX_SCAN_LENGTH",
    "MAX_WHILE_STEPS",
    "Cond",
    "Result",
    "Scan",
    "While",
    "cond",
    "result",
    "scan",
    "while_loop",
]
