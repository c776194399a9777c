"""The "c" backend: a LoweredProgram as one C function, compiled with the machine's C compiler, cached on disk.

`CEvaluator.load(lowered)` translates every step whose op it knows into C over static shapes:
- elementwise unary/binary ops (broadcasting by strides) fused into single loops: a step whose value is read
  only by elementwise steps of its own shape is computed inside their loop and never stored;
- view ops (reshape, transpose, expand_dims, squeeze, broadcast_to, slicing) become strides, no code;
- reductions (sum, mean, max, sum_like, dot_all) as strided loops (float32 sums accumulate in double);
- matmul through the BLAS sgemm/dgemm that SciPy ships (scipy.linalg.cython_blas's function pointers,
  found at run time), or a plain C loop (integers, no SciPy);
- softmax, log_softmax, logsumexp, softmax_cross_entropy, pick_mean, minus_one_hot, mse as direct kernels with
  the NumPy kernels' stabilisation; a label out of range makes the C function return its step, and the run is
  repeated on the NumPy evaluator, which raises the same ExecutionError naming the user's node.
Values get their own arena (liveness-planned, one per concurrent run, from a pool like the NumPy evaluator's);
results are fresh arrays the caller owns. The generated C holds no text of the user's (steps are commented by
number and op name), and compiles with trigraphs off; its sizes, strides and loop counters are 64-bit.

The shared object is cached under a hash of the source, compiler and flags in GRAPHCOMPILER_CACHE_DIR (or
$XDG_CACHE_HOME/graphcompiler, ~/.cache/graphcompiler), a folder only its owner may write (another is refused,
saying why once, for a private one), next to the sha256 of its bytes recorded when it was compiled: an object
that does not match (truncated, replaced, unrecorded) is compiled again, never loaded. The folder is kept under
GRAPHCOMPILER_CACHE_MAX bytes (default 256 MiB), the least recently used objects going first; the library of a
specialisation the Program evicts is closed once no run holds it.

A step whose op the generator does not know splits the C function into segments: Python runs that step's
NumPy kernel on views of the values between two C calls (a warning names the ops, once). A program with
nan_check, a machine without a C compiler (or Python headers for the small call helper), a value of a dtype C
does not know, or a failed compile runs on the NumPy evaluator instead, saying so once (nan_check silently).
This module imports nothing from graph/ops/autodiff.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import importlib.machinery
import importlib.util
import math
import os
import re
import shutil
import stat
import sys
import sysconfig
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ExecutionError, GraphCompilerError
from ..ops.elementwise import Astype, Identity, Relu, Sigmoid, StopGradient, Where
from ..ops.fused import DotAll, MinusOneHot, PickMean
from ..ops.linalg import Matmul
from ..ops.nn import MSE, LogSoftmax, LogSumExp, OneHot, Softmax, SoftmaxCrossEntropy
from ..ops.reduce import Max, Mean, Sum
from ..ops.reductions import Min, Prod
from ..ops.shape import (
    BroadcastLike,
    BroadcastTo,
    Count,
    ExpandDims,
    GetItem,
    Reshape,
    ReshapeLike,
    Squeeze,
    SumLike,
    Transpose,
    ZerosLike,
)
from ..ops.special import Erf, LogSigmoid, Softplus
from .dispatch import Dispatch
from .lowered import ALIGN, Const, LoweredProgram

# never -ffast-math: NaN/inf must survive. A GNU standard, as C99 with trigraphs off (`??/` would be a backslash);
# GNU modes allow contracting a * b + c into one FMA, which ISO modes do not: off, as NumPy rounds each op.
FLAGS = ("-O2", "-fPIC", "-shared", "-std=gnu99", "-ffp-contract=off", "-fno-math-errno")
# For programs, where the host allows: -O3 -march=native, and glibc's vector math (libmvec, glibc 2.35+ on
# x86-64) declared SIMD-callable so that fused loops of sin/exp/tanh vectorise as NumPy's own loops do.
NATIVE_FLAGS = ("-O3", "-march=native")
_SIMD_FUNCS = ("sin", "cos", "exp", "log", "tanh", "log1p")
STEP_LIMIT = 20000  # longer programs run on NumPy (the C compiler's time grows faster than linearly)
_WARNED: set = set()
_LOCK = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


# -- the disk cache: a private folder, every object checked against its recorded hash, bounded by size ----------

CACHE_MAX = 256 << 20  # bytes of the cache folder, unless GRAPHCOMPILER_CACHE_MAX says otherwise
_PRIVATE: list = []  # the private folder this process made, when the configured one was refused
_KNOWN: dict[str, str] = {}  # path -> sha256 of each library this process compiled or checked
_STALE_S = 3600  # a temporary file older than this was left by a compile that died: removed when trimming


def cache_dir() -> str:
    """Where compiled programs live: GRAPHCOMPILER_CACHE_DIR, else $XDG_CACHE_HOME/graphcompiler, else
    ~/.cache/graphcompiler, created private (0700). A folder another user could write to (group or others may
    write, or it belongs to someone else) could have its objects replaced: it is refused, saying why once, for
    the default folder when that one is safe, else a private temporary folder of this process."""
    d = os.environ.get("GRAPHCOMPILER_CACHE_DIR") or _default_cache_dir()
    why = _unsafe(d)
    if why is None:
        return d
    private = _private_dir(d)
    _warn_once(
        "cachedir:" + d,
        f"graphcompiler: not using the cache folder {d!r}: {why}; using {private!r} instead (set "
        "GRAPHCOMPILER_CACHE_DIR to a folder only you can write)",
    )
    return private


_REPLACEABLE = "another user could replace the compiled programs it holds"


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "graphcompiler")


def _unsafe(d: str) -> str | None:
    """Why folder d (created 0700 when missing) must not hold compiled code, or None when only its owner, this
    user, can write to it."""
    if os.path.lexists(d) and not os.path.isdir(d):
        return "it is not a folder"
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.stat(d)
        link = os.lstat(d)
    except OSError as e:
        return f"it cannot be made or read ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if not hasattr(os, "getuid"):  # no POSIX owners or modes (Windows): the user's profile folders are private
        return None
    me = os.getuid()
    for what, s in (("it", st), ("the link to it", link)):
        if s.st_uid != me:
            return f"{what} is owned by user {s.st_uid}, not by you (user {me}): {_REPLACEABLE}"
    writers = [w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit]
    if writers:
        return f"it is writable by {' and '.join(writers)} (mode {stat.S_IMODE(st.st_mode):o}): {_REPLACEABLE}"
    return None


def _private_dir(refused: str) -> str:
    """The default cache folder when it is not the refused one and is safe, else a 0700 temporary folder made
    once per process (and removed at its exit)."""
    default = _default_cache_dir()
    if os.path.abspath(default) != os.path.abspath(refused) and _unsafe(default) is None:
        return default
    with _LOCK:
        if not _PRIVATE or _PRIVATE[0][0] != os.getpid():
            import atexit
            import tempfile

            d = tempfile.mkdtemp(prefix="graphcompiler-")  # 0700, this user's
            atexit.register(_remove_private, os.getpid(), d)
            _PRIVATE[:] = [(os.getpid(), d)]
        return _PRIVATE[0][1]


def _remove_private(pid: int, d: str) -> None:
    if os.getpid() == pid:  # not from a forked child: the folder is its parent's
        shutil.rmtree(d, ignore_errors=True)


def cache_max() -> int:
    """The cache folder's size limit in bytes: GRAPHCOMPILER_CACHE_MAX (a number of bytes, or with K, M, G or T:
    200M, 1.5GiB), else CACHE_MAX. A value that is not a size says so once and keeps CACHE_MAX."""
    raw = os.environ.get("GRAPHCOMPILER_CACHE_MAX", "").strip()
    if not raw:
        return CACHE_MAX
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?", raw, re.IGNORECASE)
    if m is None:
        _warn_once(
            "cachemax:" + raw,
            f"graphcompiler: GRAPHCOMPILER_CACHE_MAX={raw!r} is not a size (a number of bytes, or with K, M, G or "
            f"T, e.g. 200M); the cache keeps its default limit of {CACHE_MAX >> 20} MiB",
        )
        return CACHE_MAX
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _record(path: str) -> str:
    """The integrity record of a cached library: the sha256 of its bytes, written when it was compiled."""
    return path + ".sha256"


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _trusted(path: str) -> bool | None:
    """Whether the cached library at path may be loaded: a regular file of this user whose sha256 is the one its
    record holds (and the one this process saw, where it compiled or checked it before). None: no entry at all;
    False: a bad one (truncated, replaced, without a record), compiled again."""
    if not (os.path.lexists(path) or os.path.lexists(_record(path))):
        return None
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return False
        with open(_record(path), "rb") as f:
            recorded = f.read(200).decode("ascii", "replace").strip()
        actual = _digest(path)
    except OSError:
        return False
    if not (hmac.compare_digest(actual, recorded) and hmac.compare_digest(actual, _KNOWN.get(path, actual))):
        _warn_once(
            "digest:" + path,
            f"graphcompiler: the cached object {path!r} did not match the sha256 recorded when it was compiled "
            "(truncated, or replaced); it is compiled again, and the file found there is not loaded",
        )
        return False
    _KNOWN[path] = actual
    return True


def _use(path: str) -> None:
    """Mark a cache entry as just used (the size limit removes the least recently used first)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _discard(path: str) -> None:
    """Remove a bad or evicted entry (library and record), as far as this user may."""
    for p in (path, _record(path)):
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                os.rmdir(p)
            elif os.path.lexists(p):
                os.unlink(p)
        except OSError:
            pass
    _KNOWN.pop(path, None)


def trim_cache(d: str, keep: str = "") -> None:
    """Bound folder d by cache_max(): the least recently used entries go first (a library and its record
    together; `keep`, the one just written, stays), and temporary files left by compiles that died. Only the
    files this module names (gc_*) count and go."""
    limit = cache_max()
    now = time.time()
    entries: dict[str, list] = {}  # library path -> [last use, bytes]
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        p = os.path.join(d, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not name.startswith("gc_"):  # not ours: never touched (the folder may be one the user shares)
            continue
        if name.endswith(".tmp") or name.startswith("gc_src_"):
            if now - st.st_mtime > _STALE_S:
                _discard(p)
            continue
        lib = p[: -len(".sha256")] if name.endswith(".sha256") else p
        e = entries.setdefault(lib, [0.0, 0])
        e[1] += st.st_size
        if lib == p:
            e[0] = st.st_mtime
    total = sum(size for _, size in entries.values())
    for lib, (_, size) in sorted(entries.items(), key=lambda kv: kv[1][0]):
        if total <= limit:
            break
        if lib != keep:
            _discard(lib)  # a process that has it open keeps its mapping; the next load compiles it again
            total -= size


# -- the toolchain --------------------------------------------------------------------------------


def find_compiler() -> str | None:
    """The C compiler: $CC, else cc, gcc or clang on PATH; None when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name:
            path = shutil.which(name.split()[0])
            if path:
                return path
    return None


@functools.lru_cache(maxsize=8)
def _compiler_id(cc: str) -> str:
    st = os.stat(os.path.realpath(cc))
    return f"{os.path.realpath(cc)}:{st.st_size}:{int(st.st_mtime)}"


def _build(cc: str, source: str, suffix: str, extra: Sequence[str] = (), libs: Sequence[str] = ()) -> str:
    """Compile `source` into the cache (under a hash of source, compiler, flags and host); return the path.

    An entry found there is used only when its bytes match the sha256 recorded when it was compiled; otherwise
    (or when there is none) the source is compiled, its record written, and the folder trimmed to its limit.
    Every failure, the folder's included, is a CompileError (the program then runs on NumPy, saying why)."""
    flags = list(FLAGS) + list(extra)
    key = hashlib.sha256("\0".join([source, _compiler_id(cc), *flags, *libs, _host()]).encode()).hexdigest()[:32]
    d = cache_dir()
    path = os.path.join(d, f"gc_{key}{suffix}")
    found = _trusted(path)
    if found:
        _use(path)
        return path
    import subprocess
    import tempfile

    src = tmp = ""
    try:
        if found is False:
            _discard(path)
        fd, src = tempfile.mkstemp(prefix="gc_src_", suffix=".c", dir=d)
        with os.fdopen(fd, "w") as f:
            f.write(source)
        tmp = path + f".{os.getpid()}.{threading.get_ident()}.tmp"
        r = subprocess.run([cc, *flags, src, "-o", tmp, *libs, "-lm"], capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"{cc} failed ({r.returncode}): {r.stderr.strip()[:2000]}")
        digest = _digest(tmp)
        _write_atomically(_record(path), (digest + "\n").encode())
        os.replace(tmp, path)  # atomic: another process sees all of it or nothing
        _KNOWN[path] = digest
    except OSError as e:
        raise CompileError(f"the cache folder {d!r} cannot hold the compiled program: {e}") from None
    finally:
        for p in (src, tmp):
            if p and os.path.exists(p):
                os.unlink(p)
    trim_cache(d, keep=path)
    return path


_HOST: list = []


def _host() -> str:
    """The machine and its CPU's features (-march=native objects must not travel to another CPU)."""
    if not _HOST:
        flags = ""
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags = line
                        break
        except OSError:
            pass
        _HOST.append(f"{sys.platform}:{os.uname().machine if hasattr(os, 'uname') else ''}:{flags}")
    return _HOST[0]


def _libmvec() -> bool:
    """glibc 2.35 or later on x86-64: its vector math library has every function _SIMD_FUNCS names."""
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        major, minor = (int(x) for x in version.split(".")[:2])
    except (ValueError, OSError, AttributeError):
        return False
    return name == "glibc" and (major, minor) >= (2, 35) and os.uname().machine in ("x86_64", "AMD64")


def build_program(cc: str, source: str) -> tuple[str, tuple]:
    """Compile a program with the host's best flags, falling back to plain -O2; (path, flags used)."""
    tc = _toolchain
    for extra, libs in list(tc.get("choices", [((), ())])):
        head = _simd_decls() if "-lmvec" in libs else ""
        try:
            return _build(cc, head + source, ".so", extra, libs), tuple(extra) + tuple(libs)
        except CompileError:
            if (extra, libs) == ((), ()):
                raise
            if len(tc.get("choices", ())) > 1:  # these flags do not work here: not tried again
                tc["choices"].remove((extra, libs))
    raise CompileError("no flags worked")


def _vector_isa() -> tuple | None:
    """libmvec's ISA letter and vector bytes for this CPU (AVX-512: "e", 64; AVX2: "d", 32), when usable."""
    try:
        tc = toolchain()
    except CompileError:
        return None
    if not any("-lmvec" in libs for _, libs in tc.get("choices", ())):
        return None
    flags = _host()
    if " avx512f" in flags:
        return ("e", 64)
    if " avx2" in flags and " fma" in flags:
        return ("d", 32)
    return None


def _simd_decls() -> str:
    out = ["#include <math.h>"]
    for f in _SIMD_FUNCS:
        out.append(f'__attribute__((simd("notinbranch"), const)) double {f}(double);')
        out.append(f'__attribute__((simd("notinbranch"), const)) float {f}f(float);')
    return "\n".join(out) + "\n"


class CompileError(GraphCompilerError):
    """The C compiler rejected the generated source (a bug of the generator: the program runs on NumPy)."""


_HELPER = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>
typedef int (*gcfn)(void **, char *);
/* call(fn, leaves, outs, spec, arena, nogil): the data pointers of leaves and outs, then fn(P, arena).
   spec: bytes of int64 (type number, nbytes) per leaf; a leaf that is not an aligned C-contiguous array of
   that type and size returns -(index + 1) without calling (the caller converts it and calls again). */
static PyObject *call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) { PyErr_SetString(PyExc_TypeError, "call takes 6 arguments"); return NULL; }
    gcfn fn = (gcfn)PyLong_AsVoidPtr(args[0]);
    PyObject *leaves = args[1], *outs = args[2];
    const int64_t *spec = (const int64_t *)PyBytes_AS_STRING(args[3]);
    char *arena = (char *)PyLong_AsVoidPtr(args[4]);
    int nogil = PyObject_IsTrue(args[5]);
    Py_ssize_t nl = PyList_GET_SIZE(leaves), no = PyList_GET_SIZE(outs);
    void *stack[128]; void **P = stack;
    if (nl + no > 128) { P = (void **)malloc(sizeof(void *) * (nl + no)); if (!P) return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < nl; i++) {
        PyObject *o = PyList_GET_ITEM(leaves, i);
        if (!PyArray_Check(o)) goto bad;
        PyArrayObject *a = (PyArrayObject *)o;
        if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || PyArray_DESCR(a)->type_num != spec[2 * i]
            || (int64_t)PyArray_NBYTES(a) != spec[2 * i + 1] || !PyArray_ISNOTSWAPPED(a)) goto bad;
        P[i] = PyArray_DATA(a);
        continue;
    bad:
        if (P != stack) free(P);
        return PyLong_FromSsize_t(-(i + 1));
    }
    for (Py_ssize_t i = 0; i < no; i++) P[nl + i] = PyArray_DATA((PyArrayObject *)PyList_GET_ITEM(outs, i));
    int rc;
    if (nogil) { Py_BEGIN_ALLOW_THREADS rc = fn(P, arena); Py_END_ALLOW_THREADS }
    else rc = fn(P, arena);
    if (P != stack) free(P);
    return PyLong_FromLong(rc);
}
static PyMethodDef methods[] = {{"call", (PyCFunction)(void (*)(void))call, METH_FASTCALL, "run a program"},
                                {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "MODNAME", NULL, -1, methods};
PyMODINIT_FUNC PyInit_MODNAME(void) { import_array(); return PyModule_Create(&mod); }
"""

_toolchain: dict = {}


def toolchain() -> dict:
    """The compiler, the call helper (a tiny extension module, built once per machine) and the BLAS pointers.

    Raises CompileError naming what is missing when the backend cannot run here.
    """
    with _LOCK:
        if _toolchain:
            if "error" in _toolchain:
                raise CompileError(_toolchain["error"])
            return _toolchain
        try:
            cc = find_compiler()
            if cc is None:
                raise CompileError(
                    "no C compiler found (looked for $CC, cc, gcc, clang); install one, e.g. apt-get install gcc"
                )
            inc = sysconfig.get_paths()["include"]
            if not os.path.exists(os.path.join(inc, "Python.h")):
                raise CompileError(f"Python's C headers (Python.h) are missing from {inc}; install python3-dev")
            tag = hashlib.sha256((_HELPER + sys.version + np.__version__).encode()).hexdigest()[:12]
            name = f"gc_call_{tag}"
            src = _HELPER.replace("MODNAME", name)
            ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
            path = _build(cc, src, ext, ["-I" + inc, "-I" + np.get_include()])
            final = os.path.join(os.path.dirname(path), name + ext)  # its name must match its init function
            want = _KNOWN.get(path)
            if not (want and os.path.isfile(final) and not os.path.islink(final) and _digest(final) == want):
                shutil.copyfile(path, final + ".tmp")
                os.replace(final + ".tmp", final)
            _use(final)
            loader = importlib.machinery.ExtensionFileLoader(name, final)
            spec = importlib.util.spec_from_file_location(name, final, loader=loader)
            assert spec is not None
            helper = importlib.util.module_from_spec(spec)
            loader.exec_module(helper)
            choices: list = [((), ())]
            if os.uname().machine in ("x86_64", "AMD64", "aarch64"):
                choices.insert(0, (NATIVE_FLAGS, ()))
                if _libmvec():
                    choices.insert(0, (NATIVE_FLAGS, ("-lmvec",)))
            _toolchain.update(cc=cc, call=helper.call, blas=_blas_pointers(), choices=choices)
        except Exception as e:
            _toolchain["error"] = str(e) if isinstance(e, CompileError) else f"{type(e).__name__}: {e}"
            raise CompileError(_toolchain["error"]) from None
        return _toolchain


def _blas_pointers() -> tuple[int, int, str]:
    """sgemm, dgemm and their integer type: NumPy's own OpenBLAS when it ships one (already loaded, no import),
    else scipy.linalg.cython_blas's function pointers; (0, 0, "int") when neither is found (C loops instead)."""
    import glob

    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in sorted(glob.glob(os.path.join(root, "numpy.libs", "lib*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, itype in (
            ("scipy_", "_64_", "int64_t"),
            ("", "_64_", "int64_t"),
            ("scipy_", "_", "int"),
            ("", "_", "int"),
        ):
            try:
                s_, d_ = (ctypes.cast(getattr(lib, f"{prefix}{f}gemm{suffix}"), ctypes.c_void_p).value for f in "sd")
            except AttributeError:
                continue
            return s_ or 0, d_ or 0, itype
    try:
        from scipy.linalg import cython_blas
    except ImportError:
        return 0, 0, "int"
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    out = []
    for f in ("sgemm", "dgemm"):
        cap = cython_blas.__pyx_capi__[f]
        out.append(get_ptr(cap, get_name(cap)) or 0)
    return out[0], out[1], "int"


# -- C types and literals -------------------------------------------------------------------------

_CTYPES = {
    "float64": "double",
    "float32": "float",
    "int64": "int64_t",
    "int32": "int32_t",
    "int16": "int16_t",
    "int8": "int8_t",
    "uint64": "uint64_t",
    "uint32": "uint32_t",
    "uint16": "uint16_t",
    "uint8": "uint8_t",
    "bool": "uint8_t",
}


def ctype(dt) -> str:
    name = np.dtype(dt).name
    if name not in _CTYPES:
        raise Unsupported(f"dtype {name}")
    return _CTYPES[name]


def literal(value, dt) -> str:
    dt = np.dtype(dt)
    v = np.asarray(value).astype(dt).item()
    if dt.kind == "f":
        if math.isnan(v):
            return "(NAN)"
        if math.isinf(v):
            return "(INFINITY)" if v > 0 else "(-INFINITY)"
        return f"(({ctype(dt)}){float(v)!r})"
    if dt.kind == "b":
        return "1" if v else "0"
    return f"(({ctype(dt)}){int(v)}LL)" if dt.kind == "i" else f"(({ctype(dt)}){int(v)}ULL)"


class Unsupported(Exception):
    """A step the generator does not translate (the program runs on NumPy)."""


# -- layouts -------------------------------------------------------------------------------------


class Layout:
    """Where a value lives: a base (leaf k, result k, arena byte offset), a byte offset, shape, byte strides."""

    __slots__ = ("base", "offset", "shape", "strides", "dtype", "scalar")

    def __init__(self, base, offset, shape, strides, dtype, scalar=None):
        self.base, self.offset, self.shape, self.strides = base, offset, tuple(shape), tuple(strides)
        self.dtype, self.scalar = np.dtype(dtype), scalar  # scalar: a C literal (a folded constant)

    def ptr(self) -> str:
        kind, k = self.base
        b = f"((char *)P[{k}])" if kind in ("leaf", "res") else f"(A + @{k}@)"
        return f"({b} + {self.offset})" if self.offset else b

    def contiguous(self) -> bool:
        exp = self.dtype.itemsize
        for d, s in zip(reversed(self.shape), reversed(self.strides)):
            if d != 1 and s != exp:
                return False
            exp *= d
        return True


def c_strides(shape, itemsize) -> tuple:
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(out))


def _bcast(layout: Layout, shape: tuple) -> tuple:
    """Byte strides of `layout` broadcast to `shape` (0 along broadcast dims)."""
    lead = len(shape) - len(layout.shape)
    out = [0] * lead
    for d, (n, s) in enumerate(zip(layout.shape, layout.strides)):
        out.append(0 if n == 1 and shape[lead + d] != 1 else s)
    return tuple(out)


def _loops(shape: tuple, strides_list: list) -> tuple[list, list]:
    """Collapse dims where every operand is contiguous across them: (sizes, per-operand strides)."""
    dims = [(n, [s[k] for s in strides_list]) for k, n in enumerate(shape) if n != 1]
    merged: list = []
    for n, st in dims:
        if merged:
            pn, pst = merged[-1]
            if all(p == s * n for p, s in zip(pst, st)):
                merged[-1] = (pn * n, st)
                continue
        merged.append((n, st))
    return [n for n, _ in merged], [[st[j] for _, st in merged] for j in range(len(strides_list))]


# -- elementwise expressions ---------------------------------------------------------------------
#
# An elementwise step's C expression is found from its op record (dispatch.py): from the ufunc the op class
# declares, through the tables below keyed by the ufunc object (written once for every op that declares it),
# or registered for the class (the ops NumPy has no ufunc for: relu, sigmoid, where, ...). An op with neither
# runs as a NumPy segment between C segments.

# ops the generator writes as strided views of their first input (no loop of their own)
_VIEWS = (Reshape, ReshapeLike, Transpose, ExpandDims, Squeeze, BroadcastTo, BroadcastLike, GetItem)
_RESHAPES = (Reshape, ReshapeLike, ExpandDims, Squeeze)  # views that copy into their own buffer when they must
_FOLDABLE = (Count, ZerosLike)  # ops of constants only: computed once by NumPy at generation, stored as literals

# NumPy ufunc -> the C99 <math.h> function of the same value on floats (float32: the name with an f)
_C_MATH: dict[Any, str] = {
    np.sqrt: "sqrt",
    np.exp: "exp",
    np.log: "log",
    np.log1p: "log1p",
    np.sin: "sin",
    np.cos: "cos",
    np.tanh: "tanh",
    np.expm1: "expm1",
    np.tan: "tan",
    np.arctan: "atan",
    np.sinh: "sinh",
    np.cosh: "cosh",
    np.floor: "floor",
    np.ceil: "ceil",
    np.rint: "rint",
    np.arcsin: "asin",
    np.arccos: "acos",
    np.arcsinh: "asinh",
    np.arccosh: "acosh",
    np.arctanh: "atanh",
    np.cbrt: "cbrt",
    np.exp2: "exp2",
    np.log2: "log2",
    np.log10: "log10",
    np.trunc: "trunc",
    np.fabs: "fabs",
}
_C_MATH2: dict[Any, str] = {  # binary, floats
    np.arctan2: "atan2",
    np.hypot: "hypot",
    np.copysign: "copysign",
    np.fmod: "fmod",
    np.fmax: "fmax",
    np.fmin: "fmin",
    np.nextafter: "nextafter",
}
_ARITH: dict[Any, str] = {np.add: "+", np.subtract: "-", np.multiply: "*", np.divide: "/"}
_COMPARE: dict[Any, str] = {
    np.greater: ">",
    np.less: "<",
    np.greater_equal: ">=",
    np.less_equal: "<=",
    np.equal: "==",
    np.not_equal: "!=",
}

Expr = Callable[..., str]  # expr(st, ops, in_dtypes, dt, T) -> the C expression of the step


def _expr(mixed: bool = False, bools: str = "none") -> Callable[[Expr], Expr]:
    """Mark an expression: `mixed` ones see their operands as they are (their dtypes differ from the result's),
    the others get them cast to the result's C type T; `bools`: "none" (refused on bool), "in" (bool operands
    allowed, C's arithmetic promotes them) or "any"."""

    def mark(fn: Expr) -> Expr:
        fn.mixed, fn.bools = mixed, bools  # type: ignore[attr-defined]
        return fn

    return mark


def _floats_only(st, dt: np.dtype) -> None:
    if dt.kind != "f":
        raise Unsupported(f"{st.op_name} of integers")


def _from_ufunc(u: np.ufunc) -> Expr | None:
    """The C expression of an op that declares `ufunc = u`, from the tables above; None: no C for it."""
    if u in _C_MATH:
        f = _C_MATH[u]

        @_expr()
        def math1(st, ops, in_dtypes, dt, T):
            _floats_only(st, dt)
            return f"{_fn(f, dt)}({ops[0]})"

        return math1
    if u in _C_MATH2:
        f2 = _C_MATH2[u]

        @_expr()
        def math2(st, ops, in_dtypes, dt, T):
            _floats_only(st, dt)
            return f"{_fn(f2, dt)}({ops[0]}, {ops[1]})"

        return math2
    if u in _ARITH:
        sym = _ARITH[u]

        @_expr(bools="in")
        def arith(st, ops, in_dtypes, dt, T):
            if u is np.divide and dt.kind != "f":
                raise Unsupported("integer divide")
            if dt.kind == "b":
                raise Unsupported(f"{st.op_name} on bool")
            return f"({ops[0]} {sym} {ops[1]})"

        return arith
    if u in _COMPARE:
        cmp = _COMPARE[u]

        @_expr(mixed=True)
        def compare(st, ops, in_dtypes, dt, T):
            common = ctype(np.result_type(*in_dtypes))
            return f"(({common})({ops[0]}) {cmp} ({common})({ops[1]}))"

        return compare
    return _UFUNC_EXPR.get(u)


@_expr()
def _maximum(st, ops, in_dtypes, dt, T):
    a, b = ops
    if dt.kind == "f":
        return f"gc_max_{T}({a}, {b})"
    return f"(({a}) > ({b}) ? ({a}) : ({b}))"


@_expr()
def _minimum(st, ops, in_dtypes, dt, T):
    a, b = ops
    if dt.kind == "f":
        return f"gc_min_{T}({a}, {b})"
    return f"(({a}) < ({b}) ? ({a}) : ({b}))"


@_expr()
def _power(st, ops, in_dtypes, dt, T):
    if dt.kind != "f":
        raise Unsupported("integer power")
    return f"{_fn('pow', dt)}({ops[0]}, {ops[1]})"


@_expr()
def _logaddexp(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"gc_logaddexp_{T}({ops[0]}, {ops[1]})"


@_expr()
def _negative(st, ops, in_dtypes, dt, T):
    return f"(-{ops[0]})"


@_expr()
def _square(st, ops, in_dtypes, dt, T):
    return f"({ops[0]} * {ops[0]})"


@_expr()
def _abs(st, ops, in_dtypes, dt, T):
    a = ops[0]
    return f"{_fn('fabs', dt)}({a})" if dt.kind == "f" else f"({a} < 0 ? -{a} : {a})"


@_expr()
def _sign(st, ops, in_dtypes, dt, T):
    a = ops[0]
    if dt.kind == "f":
        return f"gc_sign_{T}({a})"
    return f"(({T})(({a} > 0) - ({a} < 0)))"


@_expr()
def _reciprocal(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"(({T})1 / {ops[0]})"


# the ufuncs whose C is an expression of its own (not a <math.h> function or an operator)
_UFUNC_EXPR: dict[Any, Expr] = {
    np.maximum: _maximum,
    np.minimum: _minimum,
    np.power: _power,
    np.logaddexp: _logaddexp,
    np.negative: _negative,
    np.square: _square,
    np.absolute: _abs,
    np.sign: _sign,
    np.reciprocal: _reciprocal,
}

C_EXPR = Dispatch("c", derive=_from_ufunc)  # op class -> its elementwise C expression


@C_EXPR.register(Identity, StopGradient)
@_expr(bools="any")
def _identity(st, ops, in_dtypes, dt, T):
    return ops[0]


@C_EXPR.register(Relu)
@_expr()
def _relu(st, ops, in_dtypes, dt, T):
    a = ops[0]
    return f"gc_max_{T}({a}, ({T})0)" if dt.kind == "f" else f"({a} > 0 ? {a} : ({T})0)"


@C_EXPR.register(Sigmoid)
@_expr()
def _sigmoid(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"gc_sigmoid_{T}({ops[0]})"


@C_EXPR.register(Softplus)
@_expr()
def _softplus(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"gc_logaddexp_{T}(({T})0, {ops[0]})"


@C_EXPR.register(LogSigmoid)
@_expr()
def _log_sigmoid(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"(-gc_logaddexp_{T}(({T})0, -{ops[0]}))"


@C_EXPR.register(Erf)
@_expr()
def _erf(st, ops, in_dtypes, dt, T):
    _floats_only(st, dt)
    return f"{_fn('erf', dt)}({ops[0]})"


@C_EXPR.register(Where)
@_expr(mixed=True)
def _where(st, ops, in_dtypes, dt, T):
    return f"({ops[0]} ? ({T})({ops[1]}) : ({T})({ops[2]}))"


@C_EXPR.register(Astype)
@_expr(mixed=True)
def _astype(st, ops, in_dtypes, dt, T):
    src = np.dtype(in_dtypes[0])
    if dt.kind == "b":
        return f"(({ops[0]}) != 0)"
    if src.kind == "f" and dt.kind in "iu":
        raise Unsupported("astype from float to int")
    return f"(({T})({ops[0]}))"


def _fn(name: str, dt) -> str:
    return name + ("f" if np.dtype(dt) == np.float32 else "")


def ew_expr(st, ops: list[str], in_dtypes: list) -> str:
    """The C expression of an elementwise step on operand expressions `ops` (of dtypes in_dtypes)."""
    fn = C_EXPR(st.op)
    if fn is None:
        raise Unsupported(st.op_name)
    dt = np.dtype(st.dtype)
    T = ctype(dt)
    if getattr(fn, "mixed", False):
        return fn(st, ops, in_dtypes, dt, T)
    bools = getattr(fn, "bools", "none")
    if bools != "any" and (dt.kind == "b" or any(np.dtype(d).kind == "b" for d in in_dtypes) and bools != "in"):
        raise Unsupported(f"{st.op_name} on bool")
    return fn(st, [f"(({T})({o}))" for o in ops], in_dtypes, dt, T)


# the vectorised loops (GCC vector types): C's operators, or glibc's libmvec functions called directly
_VEC_OPS: dict[Any, str] = {np.add: "+", np.subtract: "-", np.multiply: "*", np.divide: "/"}


def _vector_from_ufunc(u: np.ufunc) -> Callable | None:
    """vexpr(ops, call) -> the vector expression of an op declaring `ufunc = u`; call(fname, x) a libmvec call."""
    if u in _VEC_OPS:
        return lambda ops, call: f"({ops[0]} {_VEC_OPS[u]} {ops[1]})"
    if u is np.negative:
        return lambda ops, call: f"(-{ops[0]})"
    if u is np.square:
        return lambda ops, call: f"({ops[0]} * {ops[0]})"
    if _C_MATH.get(u) in _SIMD_FUNCS:
        return lambda ops, call: call(_C_MATH[u], ops[0])
    return None


C_VECTOR = Dispatch("c-vector", derive=_vector_from_ufunc)
C_VECTOR.register(Identity, StopGradient)(lambda ops, call: ops[0])

# the steps with a generator method of their own (Generator.c_sum, ...): op class -> method(self, st, pos)
EMIT = Dispatch("c")


_PRELUDE = r"""#include <math.h>
#include <stdint.h>
#include <string.h>
typedef void (*gc_gemm_t)(char *, char *, gc_int *, gc_int *, gc_int *, void *, void *, gc_int *, void *,
                          gc_int *, void *, void *, gc_int *);
static gc_gemm_t gc_sgemm = 0, gc_dgemm = 0;
void gc_init(void *s, void *d) { gc_sgemm = (gc_gemm_t)s; gc_dgemm = (gc_gemm_t)d; }
#define GC_DEF(T, S) \
static inline T gc_max_##T(T a, T b) { return (a != a || a > b) ? a : ((b != b) ? b : (a >= b ? a : b)); } \
static inline T gc_min_##T(T a, T b) { return (a != a || a < b) ? a : ((b != b) ? b : (a <= b ? a : b)); } \
static inline T gc_sign_##T(T a) { return a > 0 ? (T)1 : (a < 0 ? (T)-1 : a); } \
static inline T gc_logaddexp_##T(T a, T b) { if (a == b) return a + (T)0.69314718055994530942; \
    T d = a - b; if (d > 0) return a + log1p##S(exp##S(-d)); if (d <= 0) return b + log1p##S(exp##S(d)); return d; } \
static inline T gc_sigmoid_##T(T a) { if (a >= 0) return (T)1 / ((T)1 + exp##S(-a)); T e = exp##S(a); \
    return e / ((T)1 + e); }
GC_DEF(double, )
GC_DEF(float, f)
/* C (m x n, row-major, contiguous) = A (m x k) B (k x n), A and B by byte strides (one of them unit). Sizes and
   strides are 64-bit; BLAS is called only where every size and leading dimension fits its integer (gc_int). */
#define GC_FITS(x) ((int64_t)(gc_int)(x) == (int64_t)(x))
#define GC_MM(T, NAME, GEMM) \
static void NAME(int64_t m, int64_t n, int64_t k, const char *a, int64_t ra, int64_t ca, const char *b, int64_t rb, \
                 int64_t cb, T *c) { \
    if (m == 0 || n == 0) return; \
    if (k == 0) { memset(c, 0, sizeof(T) * (size_t)m * (size_t)n); return; } \
    const int64_t z = (int64_t)sizeof(T); \
    if (GEMM && (ca == z || k == 1 || ra == z || m == 1) && (cb == z || n == 1 || rb == z || k == 1)) { \
        char ta, tb; int64_t lda, ldb; \
        if (ca == z || k == 1) { ta = 'N'; lda = (m == 1) ? k : ra / z; if (lda < k) lda = k; } \
        else { ta = 'T'; lda = (k == 1) ? m : ca / z; if (lda < m) lda = m; } \
        if (cb == z || n == 1) { tb = 'N'; ldb = (k == 1) ? n : rb / z; if (ldb < n) ldb = n; } \
        else { tb = 'T'; ldb = (n == 1) ? k : cb / z; if (ldb < k) ldb = k; } \
        if (GC_FITS(m) && GC_FITS(n) && GC_FITS(k) && GC_FITS(lda) && GC_FITS(ldb)) { \
            gc_int m_ = (gc_int)m, n_ = (gc_int)n, k_ = (gc_int)k, lda_ = (gc_int)lda, ldb_ = (gc_int)ldb; \
            T one = 1, zero = 0; \
            GEMM(&tb, &ta, &n_, &m_, &k_, &one, (void *)b, &ldb_, (void *)a, &lda_, &zero, c, &n_); \
            return; \
        } \
    } \
    for (int64_t i = 0; i < m; i++) { \
        T *ci = c + (size_t)i * (size_t)n; \
        for (int64_t j = 0; j < n; j++) ci[j] = 0; \
        for (int64_t p = 0; p < k; p++) { \
            T av = *(const T *)(a + i * ra + p * ca); \
            const char *bp = b + p * rb; \
            for (int64_t j = 0; j < n; j++) ci[j] += av * *(const T *)(bp + j * cb); \
        } \
    } \
}
GC_MM(float, gc_mm_float, gc_sgemm)
GC_MM(double, gc_mm_double, gc_dgemm)
#define GC_MMI(T) \
static void gc_mm_##T(int64_t m, int64_t n, int64_t k, const char *a, int64_t ra, int64_t ca, const char *b, \
                      int64_t rb, int64_t cb, T *c) { \
    for (int64_t i = 0; i < m; i++) for (int64_t j = 0; j < n; j++) { T s = 0; \
        for (int64_t p = 0; p < k; p++) s += *(const T *)(a + i * ra + p * ca) * *(const T *)(b + p * rb + j * cb); \
        c[(size_t)i * (size_t)n + j] = s; } \
}
GC_MMI(int64_t)
GC_MMI(int32_t)
"""


# -- the generator --------------------------------------------------------------------------------


class Generator:
    """Translate a LoweredProgram into C source: `source`, the arena layout, the constants to copy in."""

    def __init__(self, lw: LoweredProgram, vec: tuple | None = None):
        self.lw = lw
        self.vec = vec  # (libmvec ISA letter, bytes per vector) or None
        self.blas_int = "int"  # the BLAS's integer type (int64_t for an ILP64 OpenBLAS)
        self.vec_used: set = set()
        self.py_steps: list = []
        self.leaf_meta: dict = {}  # (step, args, out layout, why) run by NumPy between C segments
        self.lines: list[str] = []
        self.layout: dict[int, Layout] = {}
        self.allocs: list[list] = []  # [size, first, last, offset]
        self.alloc_of: dict[int, int] = {}  # slot -> alloc index (for liveness through views)
        self.consts: list[tuple[int, np.ndarray]] = []  # (alloc index, value) copied into every arena
        self.var = 0

    # storage
    def new_alloc(self, nbytes: int, pos: int) -> int:
        self.allocs.append([max(int(nbytes), 1), pos, pos, 0])
        return len(self.allocs) - 1

    def touch(self, slot: int, pos: int) -> None:
        a = self.alloc_of.get(slot)
        if a is not None:
            self.allocs[a][2] = max(self.allocs[a][2], pos)

    def generate(self) -> str:
        """The C source: the steps in order (elementwise runs fused), the results copied out, the arena planned."""
        if len(self.lw.steps) > STEP_LIMIT:
            raise Unsupported(f"{len(self.lw.steps)} steps (over {STEP_LIMIT})")
        self._index_slots()
        self.lines = []
        self._emit_steps()
        self._copy_results()
        self.plan_arena()
        return self._functions()

    def _index_slots(self) -> None:
        """Where leaves and results live (C-contiguous arrays passed in P[0..]), each step by its slot, and
        which steps read each slot."""
        lw = self.lw
        self.leaf_index = {s: k for k, s in enumerate(lw.leaves)}
        self.res_index: dict[int, int] = {}
        n_leaves = len(lw.leaves)
        for k, r in enumerate(lw.results):
            if isinstance(r, int) and r not in self.leaf_index and r not in self.res_index:
                self.res_index[r] = n_leaves + k
        self.by_slot = {st.slot: st for st in lw.steps}
        readers: dict[int, list[int]] = {}
        for k, st in enumerate(lw.steps):
            for a in st.args:
                if isinstance(a, int):
                    readers.setdefault(a, []).append(k)
        self.readers = readers
        self.results = {r for r in lw.results if isinstance(r, int)}

    def _emit_steps(self) -> None:
        """Every step, in order. Fusion: elementwise steps of one shape connected by their values form one loop
        (a group), emitted when a step outside it first reads one of its values (or at the end); a member's
        value is stored only when a step outside the group or the results read it, otherwise it lives in a
        register."""
        steps = self.lw.steps
        group_of: dict[int, list] = {}  # slot -> its open group (a list of step indices)
        for k, st in enumerate(steps):
            mine = self._join_group(st, k, group_of)
            self._close_groups_read_by(st, k, mine, group_of)
            if mine is not None:
                group_of[st.slot] = mine
                continue
            self.pos = k
            self.lines.append(_comment(k, st))
            self.emit_step(st, k)
        for g in {id(g): g for g in group_of.values()}.values():
            self.close(g, len(steps))

    def _join_group(self, st, k: int, group_of: dict[int, list]) -> list | None:
        """The open group step k joins (merging the open groups it reads), a new group, or None (not fusible)."""
        steps = self.lw.steps
        if not (C_EXPR(st.op) is not None and not self._all_const(st) and self._ew_ok(st)):
            return None
        cands: list = []
        for a in st.args:
            g = group_of.get(a) if isinstance(a, int) else None
            if g is not None and steps[g[0]].shape == st.shape and all(g is not c for c in cands):
                cands.append(g)
        if not cands:
            return [k]
        mine = cands[0]
        for g in cands[1:]:  # open groups merge (none of their values is read outside yet)
            mine.extend(g)
            for m in g:
                group_of[steps[m].slot] = mine
        mine.sort()
        mine.append(k)
        return mine

    def _close_groups_read_by(self, st, k: int, mine: list | None, group_of: dict[int, list]) -> None:
        """A step outside a group reading its value closes it (emits its loop)."""
        steps = self.lw.steps
        for a in st.args:
            g = group_of.get(a) if isinstance(a, int) else None
            if g is not None and g is not mine:
                self.close(g, k)
                for m in g:
                    group_of.pop(steps[m].slot, None)

    def _copy_results(self) -> None:
        """Copy into their result arrays the results not computed there (leaves, views, duplicates)."""
        lw = self.lw
        n_leaves = len(lw.leaves)
        seen: set = set()
        for k, r in enumerate(lw.results):
            if isinstance(r, Const):
                continue
            lay = self.layout.get(r)
            if lay is not None and lay.base == ("res", n_leaves + k) and r not in seen:
                seen.add(r)
                continue
            seen.add(r)
            src = self.get(r, len(lw.steps))
            shape = src.shape
            dst = Layout(("res", n_leaves + k), 0, shape, c_strides(shape, src.dtype.itemsize), src.dtype)
            self.lines.append(f"    /* result {k}: a copy */")
            self.copy_loop(src, dst)

    def _functions(self) -> str:
        """The prelude, then one C function per segment (`gc_run`, or `gc_run_0`, ... around Python steps)."""
        head = [f"#include <stdint.h>\ntypedef {self.blas_int} gc_int;", _PRELUDE, self.vec_prelude()]
        body = self.lines[0]
        parts = re.split(r"@@SPLIT \d+@@", body)
        self.n_segments = len(parts)
        funcs = []
        for i, part in enumerate(parts):
            name = "gc_run" if len(parts) == 1 else f"gc_run_{i}"
            funcs += [f"int {name}(void **P, char *A) {{", part, "    return 0;", "}", ""]
        return "\n".join(head + funcs)

    def _ew_ok(self, st) -> bool:
        dts = []
        for a in st.args:
            if isinstance(a, Const):
                dts.append(np.asarray(a.value).dtype)
            elif a in self.by_slot:
                dts.append(self.by_slot[a].dtype)
            else:
                dts.append(self.leaf_meta[a][1])
        try:
            ctype(st.dtype)
            for d in dts:
                ctype(d)
            ew_expr(st, ["x"] * len(st.args), dts)
        except Unsupported:
            return False
        return True

    def _all_const(self, st) -> bool:
        return all(isinstance(a, Const) for a in st.args)

    def get(self, a, pos: int) -> Layout:
        """The layout of argument `a` (a slot or a Const) read at position pos."""
        if isinstance(a, Const):
            v = np.asarray(a.value)
            if v.size == 1 and v.ndim == 0:
                return Layout(("const", 0), 0, (), (), v.dtype, literal(v, v.dtype))
            if v.dtype.kind not in "biuf":
                raise Unsupported("a constant of dtype " + str(v.dtype))
            v = np.ascontiguousarray(v)
            al = self.new_alloc(v.nbytes, -1)
            self.allocs[al][2] = 1 << 60  # constants live for the whole arena
            self.consts.append((al, v))
            return Layout(("arena", al), 0, v.shape, c_strides(v.shape, v.dtype.itemsize), v.dtype)
        self.touch(a, pos)
        if a in self.layout:
            return self.layout[a]
        if a in self.leaf_index:
            k = self.leaf_index[a]
            shape, dt = self.lw_leaf_shape(a)
            lay = Layout(("leaf", k), 0, shape, c_strides(shape, dt.itemsize), dt)
            self.layout[a] = lay
            return lay
        raise Unsupported(f"slot {a} read before it is written")

    def lw_leaf_shape(self, slot):
        return self.leaf_meta[slot]

    def store(self, st, pos: int) -> Layout:
        """A fresh contiguous home for step st's value (its result array, or the arena)."""
        dt = np.dtype(st.dtype)
        strides = c_strides(st.shape, dt.itemsize)
        if st.slot in self.res_index:
            lay = Layout(("res", self.res_index[st.slot]), 0, st.shape, strides, dt)
        else:
            al = self.new_alloc(int(np.prod(st.shape, dtype=np.int64)) * dt.itemsize, pos)
            self.alloc_of[st.slot] = al
            lay = Layout(("arena", al), 0, st.shape, strides, dt)
        self.layout[st.slot] = lay
        return lay

    def temp(self, shape, dt, pos: int) -> Layout:
        dt = np.dtype(dt)
        al = self.new_alloc(int(np.prod(shape, dtype=np.int64)) * dt.itemsize, pos)
        return Layout(("arena", al), 0, shape, c_strides(shape, dt.itemsize), dt)

    def contiguous(self, lay: Layout, pos: int) -> Layout:
        if lay.scalar is not None or lay.contiguous():
            return lay
        t = self.temp(lay.shape, lay.dtype, pos)
        self.copy_loop(lay, t)
        return t

    # loops
    def nd_loop(self, shape: tuple, layouts: list[Layout], body) -> None:
        """Nested loops over `shape`; body(list of byte-offset expressions per layout) -> statements."""
        strides = [_bcast(l, shape) if l.scalar is None else (0,) * len(shape) for l in layouts]
        sizes, st = _loops(shape, strides)
        if any(n == 0 for n in shape):
            return
        ind = "    "
        idx = []
        self.lines.append(ind + "{")
        for d, n in enumerate(sizes):
            v = f"i{d}"
            ind += "    "
            self.lines.append(f"{ind}for (int64_t {v} = 0; {v} < {n}LL; {v}++) {{")
            idx.append(v)
        offs = []
        for j, l in enumerate(layouts):
            terms = [f"{v} * {s}LL" for v, s in zip(idx, st[j]) if s]
            offs.append(" + ".join(terms) if terms else "0")
        for line in body(offs):
            self.lines.append(ind + "    " + line)
        for _ in sizes:
            self.lines.append(ind + "}")
            ind = ind[:-4]
        self.lines.append(ind + "}")

    def load(self, lay: Layout, off: str) -> str:
        if lay.scalar is not None:
            return lay.scalar
        return f"*(const {ctype(lay.dtype)} *)({lay.ptr()} + {off})"

    def copy_loop(self, src: Layout, dst: Layout) -> None:
        T = ctype(dst.dtype)
        self.nd_loop(
            dst.shape, [src, dst], lambda o: [f"*({T} *)({dst.ptr()} + {o[1]}) = ({T})({self.load(src, o[0])});"]
        )

    # elementwise groups
    def close(self, members: list, pos: int) -> None:
        """Emit the loop of an elementwise group; store the values read outside it."""
        steps = self.lw.steps
        group = [steps[m] for m in sorted(set(members))]
        inside = {st.slot for st in group}
        self.pos = pos
        for m in sorted(set(members)):
            self.lines.append(_comment(m, steps[m]))
        ext: dict = {}
        order: list = []
        for st in group:
            for a in st.args:
                key = id(a) if isinstance(a, Const) else a
                if (isinstance(a, Const) or a not in inside) and key not in ext:
                    ext[key] = self.get(a, pos)
                    order.append(key)
        stored = [
            st
            for st in group
            if st.slot in self.results or any(steps[r].slot not in inside for r in self.readers.get(st.slot, []))
        ]
        outs = [self.store(st, pos) for st in stored]
        lays = [ext[k] for k in order] + outs
        names = {k: j for j, k in enumerate(order)}
        n_ext = len(order)

        def body(offs):
            stmts = []
            for st in group:
                ops, dts = [], []
                for a in st.args:
                    if isinstance(a, int) and a in inside:
                        ops.append(f"t{a}")
                        dts.append(self.by_slot[a].dtype)
                    else:
                        j = names[id(a) if isinstance(a, Const) else a]
                        ops.append(self.load(lays[j], offs[j]))
                        dts.append(lays[j].dtype)
                stmts.append(f"const {ctype(st.dtype)} t{st.slot} = {ew_expr(st, ops, dts)};")
            for j, (st, out) in enumerate(zip(stored, outs)):
                stmts.append(f"*({ctype(st.dtype)} *)({out.ptr()} + {offs[n_ext + j]}) = t{st.slot};")
            return stmts

        if not self.vector_loop(group, inside, lays, names, stored, outs, body):
            self.nd_loop(group[-1].shape, lays, body)

    def vector_loop(self, group, inside, lays, names, stored, outs, scalar_body) -> bool:
        """A flat loop over W elements at a time (float types, contiguous or scalar operands), the rest scalar."""
        fit = self._vector_fit(group, lays)
        if fit is None:
            return False
        dt, n, w, strides = fit
        isa, nbytes = self.vec or ("", 0)
        T = ctype(dt)
        V = f"gc_v{w}{'d' if dt.itemsize == 8 else 'f'}"
        suffix = "" if dt.itemsize == 8 else "f"
        self.vec_used.add((V, T, nbytes, isa, w, suffix))
        L = self.lines
        L.append("    {")
        L.append("        int64_t i0 = 0;")
        L.append(f"        for (; i0 + {w} <= {n}LL; i0 += {w}) {{")
        for stp in group:
            ops = []
            for a in stp.args:
                if isinstance(a, int) and a in inside:
                    ops.append(f"t{a}")
                else:
                    j = names[id(a) if isinstance(a, Const) else a]
                    ops.append(_vector_operand(lays[j], strides[j][0], V, T))
            L.append(f"            const {V} t{stp.slot} = {self._vector_expr(stp, ops, V, isa, w, suffix)};")
        for stp, out in zip(stored, outs):
            L.append(f"            gc_store_{V}({out.ptr()} + i0 * {dt.itemsize}LL, t{stp.slot});")
        L.append("        }")
        L.append(f"        for (; i0 < {n}LL; i0++) {{")
        offs = [f"i0 * {s[0]}LL" if s[0] else "0" for s in strides]
        for line in scalar_body(offs):
            L.append("            " + line)
        L.append("        }")
        L.append("    }")
        return True

    def _vector_fit(self, group, lays) -> tuple | None:
        """(dtype, elements, elements per vector, operands' strides) where the group can run as one flat vector
        loop: vectors available, one float type throughout, ops libmvec or C's operators cover, operands contiguous
        or scalar over a single loop of at least one vector's length; else None."""
        if self.vec is None:
            return None
        dt = np.dtype(group[-1].dtype)
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            return None
        if any(np.dtype(st.dtype) != dt or C_VECTOR(st.op) is None for st in group):
            return None
        if any(l.dtype != dt for l in lays):
            return None
        shape = group[-1].shape
        strides = [_bcast(l, shape) if l.scalar is None else (0,) * len(shape) for l in lays]
        sizes, st_ = _loops(shape, strides)
        if len(sizes) != 1 or any(s[0] not in (0, dt.itemsize) for s in st_):
            return None
        n = sizes[0]
        w = self.vec[1] // dt.itemsize
        if n < w:
            return None
        return dt, n, w, st_

    def _vector_expr(self, st, ops: list[str], V: str, isa: str, w: int, suffix: str) -> str:
        """The vector expression of one step: C's operators on GCC vectors, or libmvec's W-wide function."""

        def call(name: str, x: str) -> str:
            self.vec_used.add(("fn", name, V, isa, w, suffix))
            return f"_ZGV{isa}N{w}v_{name}{suffix}({x})"

        vexpr = C_VECTOR(st.op)
        assert vexpr is not None  # _vector_fit admitted only steps that have one
        return vexpr(ops, call)

    def vec_prelude(self) -> str:
        out = []
        for item in sorted(self.vec_used, key=str):
            if item[0] == "fn":
                continue
            V, T, nbytes, isa, w, suffix = item
            out.append(f"typedef {T} {V} __attribute__((vector_size({nbytes})));")
            out.append(f"static inline {V} gc_load_{V}(const char *p) {{ {V} v; memcpy(&v, p, sizeof v); return v; }}")
            out.append(f"static inline void gc_store_{V}(char *p, {V} v) {{ memcpy(p, &v, sizeof v); }}")
        for item in sorted(self.vec_used, key=str):
            if item[0] == "fn":
                _, name, V, isa, w, suffix = item
                out.append(f"extern {V} _ZGV{isa}N{w}v_{name}{suffix}({V});")
        return "\n".join(out)

    # other steps
    def emit_step(self, st, k: int) -> None:
        mark = len(self.lines)
        try:
            self._emit_step(st, k)
        except Unsupported as e:
            del self.lines[mark:]
            self.python_step(st, k, str(e))

    def python_step(self, st, pos: int, why: str) -> None:
        """A step C does not translate: the C function returns here, Python runs the step's NumPy kernel on
        views of the values and writes its result into the step's planned home; then the next C segment."""
        args = []
        for a in st.args:
            if isinstance(a, Const):
                args.append(("const", a.value))
            else:
                lay = self.get(a, pos)
                args.append(("view", lay))
        out = self.store(st, pos)
        self.py_steps.append((st, args, out, why))
        self.lines.append(f"@@SPLIT {len(self.py_steps) - 1}@@")

    def _emit_step(self, st, k: int) -> None:
        pos = k
        fn = EMIT(st.op)
        if fn is not None:
            fn(self, st, pos)
            return
        if isinstance(st.op, _VIEWS):
            self.view(st, pos)
            return
        if (isinstance(st.op, _FOLDABLE) or C_EXPR(st.op) is not None) and self._all_const(st):
            v = np.asarray(st.kernel(*[a.value for a in st.args], **st.kw))
            self.fold(st, v, pos)
            return
        raise Unsupported(st.op_name)

    def fold(self, st, v, pos) -> None:
        v = np.asarray(v, dtype=st.dtype).reshape(st.shape)
        out = self.store(st, pos)
        lay = self.get(Const(v), pos) if v.ndim else Layout(("const", 0), 0, (), (), v.dtype, literal(v, v.dtype))
        self.copy_loop(lay, out)

    def view(self, st, pos) -> None:
        src_slot = st.args[0]
        if isinstance(src_slot, Const):  # a view of a constant: a constant
            if not all(isinstance(a, Const) for a in st.args):
                raise Unsupported(f"{st.op_name} of a constant and a value")
            self.fold(st, np.asarray(st.kernel(*[a.value for a in st.args], **st.kw)), pos)
            return
        src = self.get(src_slot, pos)
        if src.scalar is not None:
            raise Unsupported("view of a literal")
        dt = src.dtype
        extent = src.offset + sum((d - 1) * s for d, s in zip(src.shape, src.strides) if d > 0) + dt.itemsize
        if any(d == 0 for d in src.shape):
            extent = src.offset + dt.itemsize
        base = np.zeros(max(extent, dt.itemsize) + dt.itemsize, np.uint8)
        addr = base.__array_interface__["data"][0]
        if any(x < 0 for x in src.strides):
            raise Unsupported(f"{st.op_name} of a value with negative strides")
        fake = np.ndarray(src.shape, dt, buffer=base, offset=src.offset, strides=src.strides)
        args = [fake] + [a.value if isinstance(a, Const) else None for a in st.args[1:]]
        if any(x is None for x in args):
            raise Unsupported(f"{st.op_name} reading a second value")
        res = np.asarray(st.kernel(*args, **st.kw))
        if res.shape != tuple(st.shape):
            raise Unsupported(f"{st.op_name}: unexpected shape")
        ra = res.__array_interface__["data"][0]
        if (np.shares_memory(res, base) or res.size == 0) and all(x >= 0 for x in res.strides):
            lay = Layout(src.base, ra - addr, res.shape, res.strides, dt)
            self.layout[st.slot] = lay
            if src_slot in self.alloc_of:
                self.alloc_of[st.slot] = self.alloc_of[src_slot]
            if st.slot in self.res_index:  # a result that is a view: copied out at the end
                pass
            return
        if isinstance(st.op, _RESHAPES):
            out = self.store(st, pos)
            flat = Layout(out.base, out.offset, src.shape, c_strides(src.shape, dt.itemsize), dt)
            self.copy_loop(src, flat)
            return
        raise Unsupported(f"{st.op_name} that copies")

    @EMIT.register(SumLike)
    def c_sum_like(self, st, pos):
        g = self.get(st.args[0], pos)
        shape = tuple(st.shape)
        if g.shape == shape:
            self.layout[st.slot] = g
            if st.args[0] in self.alloc_of:
                self.alloc_of[st.slot] = self.alloc_of[st.args[0]]
            return
        lead = len(g.shape) - len(shape)
        axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1)
        self.reduce(st, g, axes, "sum", pos)

    @EMIT.register(Sum)
    def c_sum(self, st, pos):
        self.reduce(st, self.get(st.args[0], pos), tuple(st.op.axis), "sum", pos)

    @EMIT.register(Mean)
    def c_mean(self, st, pos):
        self.reduce(st, self.get(st.args[0], pos), tuple(st.op.axis), "mean", pos)

    @EMIT.register(Max)
    def c_max(self, st, pos):
        x = self.get(st.args[0], pos)
        if any(x.shape[a] == 0 for a in st.op.axis):
            raise Unsupported("max over an empty axis")
        self.reduce(st, x, tuple(st.op.axis), "max", pos)

    @EMIT.register(Min)
    def c_min(self, st, pos):
        x = self.get(st.args[0], pos)
        if any(x.shape[a] == 0 for a in st.op.axis):
            raise Unsupported("min over an empty axis")
        self.reduce(st, x, tuple(st.op.axis), "min", pos)

    @EMIT.register(Prod)
    def c_prod(self, st, pos):
        self.reduce(st, self.get(st.args[0], pos), tuple(st.op.axis), "prod", pos)

    def reduce(self, st, x: Layout, axes: tuple, kind: str, pos) -> None:
        out = self.store(st, pos)
        T = ctype(st.dtype)
        odt = np.dtype(st.dtype)
        if kind != "max" and odt.kind != "f" and odt.kind not in "iu":
            raise Unsupported("reduction dtype")
        acc = "double" if odt.kind == "f" and kind in ("sum", "mean") else T
        if x.scalar is not None:
            x = Layout(("const", 0), 0, (), (), x.dtype, x.scalar)
        kept = [d for d in range(len(x.shape)) if d not in axes]
        red = [d for d in range(len(x.shape)) if d in axes]
        count = int(np.prod([x.shape[d] for d in red], dtype=np.int64))
        if kind == "max":
            init = "(-INFINITY)" if odt.kind == "f" else ("0" if odt.kind == "b" else literal(np.iinfo(odt).min, odt))
            upd = f"a = gc_max_{T}(a, v);" if odt.kind == "f" else "a = v > a ? v : a;"
        elif kind == "min":
            init = "(INFINITY)" if odt.kind == "f" else ("1" if odt.kind == "b" else literal(np.iinfo(odt).max, odt))
            upd = f"a = gc_min_{T}(a, v);" if odt.kind == "f" else "a = v < a ? v : a;"
        elif kind == "prod":
            init, upd = "1", "a *= v;"
        else:
            init, upd = "0", "a += v;"
        L = self.lines
        L.append("    {")
        L.append("        int64_t o = 0;")
        ind = "        "
        for d in kept:
            L.append(f"{ind}for (int64_t k{d} = 0; k{d} < {x.shape[d]}LL; k{d}++) {{")
            ind += "    "
        L.append(f"{ind}{acc} a = {init};")
        inner = ind
        for d in red:
            L.append(f"{inner}for (int64_t k{d} = 0; k{d} < {x.shape[d]}LL; k{d}++) {{")
            inner += "    "
        terms = [f"k{d} * {s}LL" for d, s in enumerate(x.strides) if s and x.shape[d] > 1]
        off = " + ".join(terms) or "0"
        L.append(f"{inner}const {acc} v = ({acc})({self.load(x, off)});")
        L.append(f"{inner}{upd}")
        for d in red:
            inner = inner[:-4]
            L.append(f"{inner}}}")
        fin = f"a / (double){count}" if kind == "mean" else "a"
        L.append(f"{ind}(({T} *){out.ptr()})[o++] = ({T})({fin});")
        for d in kept:
            ind = ind[:-4]
            L.append(f"{ind}}}")
        L.append("    }")

    @EMIT.register(DotAll)
    def c_dot_all(self, st, pos):
        a, b = self.get(st.args[0], pos), self.get(st.args[1], pos)
        out = self.store(st, pos)
        T = ctype(st.dtype)
        if np.dtype(st.dtype).kind != "f":
            raise Unsupported("integer dot_all")
        shape = np.broadcast_shapes(a.shape, b.shape)
        if (
            a.scalar is None
            and b.scalar is None
            and a.shape == b.shape == tuple(shape)
            and a.contiguous()
            and b.contiguous()
            and a.dtype == b.dtype
        ):
            # 8 partial sums: a reduction C may vectorise without reassociating (no -ffast-math needed)
            n = int(np.prod(shape, dtype=np.int64))
            A = ctype(a.dtype)
            self.lines += [
                "    { double s8[8] = {0, 0, 0, 0, 0, 0, 0, 0}; double s = 0; int64_t i = 0;",
                f"      const {A} *x = (const {A} *){a.ptr()}, *y = (const {A} *){b.ptr()};",
                f"      for (; i + 8 <= {n}LL; i += 8) for (int64_t j = 0; j < 8; j++) "
                "s8[j] += (double)x[i + j] * (double)y[i + j];",
                f"      for (; i < {n}LL; i++) s += (double)x[i] * (double)y[i];",
                "      for (int64_t j = 0; j < 8; j++) s += s8[j];",
                f"      *({T} *){out.ptr()} = ({T})s; }}",
            ]
            return
        self.lines.append("    { double s = 0;")
        lays = [a, b]
        self.nd_loop(shape, lays, lambda o: [f"s += (double)({self.load(a, o[0])}) * (double)({self.load(b, o[1])});"])
        self.lines.append(f"    *({T} *){out.ptr()} = ({T})s; }}")

    @EMIT.register(MSE)
    def c_mse(self, st, pos):
        a, b = self.get(st.args[0], pos), self.get(st.args[1], pos)
        out = self.store(st, pos)
        T = ctype(st.dtype)
        shape = np.broadcast_shapes(a.shape, b.shape)
        n = int(np.prod(shape, dtype=np.int64))
        self.lines.append("    { double s = 0;")
        self.nd_loop(
            shape,
            [a, b],
            lambda o: [
                f"{{ const {T} d = ({T})({self.load(a, o[0])}) - ({T})({self.load(b, o[1])}); s += (double)d * d; }}"
            ],
        )
        self.lines.append(f"    *({T} *){out.ptr()} = ({T})(s / (double){n}); }}")

    @EMIT.register(Matmul)
    def c_matmul(self, st, pos):
        a, b = self.get(st.args[0], pos), self.get(st.args[1], pos)
        if a.scalar is not None or b.scalar is not None:
            raise Unsupported("matmul of a literal")
        dt = np.dtype(st.dtype)
        if a.dtype != dt or b.dtype != dt or dt.name not in ("float32", "float64", "int64", "int32"):
            raise Unsupported("matmul of mixed or unsupported dtypes")
        out = self.store(st, pos)
        z = dt.itemsize
        # as stacks of matrices: a (..., m, k), b (..., k, n)
        ash, ast = (a.shape, a.strides) if len(a.shape) > 1 else ((1,) + a.shape, (0,) + a.strides)
        bsh, bst = (b.shape, b.strides) if len(b.shape) > 1 else (b.shape + (1,), b.strides + (0,))
        m, k, n = ash[-2], ash[-1], bsh[-1]
        a2, b2 = self._matrix(a, ash, ast, pos), self._matrix(b, bsh, bst, pos)
        ash, ast, aptr = a2
        bsh, bst, bptr = b2
        batch = tuple(np.broadcast_shapes(ash[:-2], bsh[:-2]))
        fn = f"gc_mm_{ctype(dt)}"
        abl = Layout(("const", 0), 0, ash[:-2], ast[:-2], dt)
        bbl = Layout(("const", 0), 0, bsh[:-2], bst[:-2], dt)
        fake_out = Layout(("const", 0), 0, batch, c_strides(batch, m * n * z) if batch else (), dt)
        T = ctype(dt)

        def body(o):
            return [
                f"{fn}({m}, {n}, {k}, {aptr} + {o[0]}, {ast[-2]}LL, {ast[-1]}LL, {bptr} + {o[1]}, {bst[-2]}LL, "
                f"{bst[-1]}LL, ({T} *)({out.ptr()} + {o[2]}));"
            ]

        if not batch:
            self.lines.extend("    " + s for s in body(["0", "0", "0"]))
        else:
            self.nd_loop(batch, [abl, bbl, fake_out], body)

    def _matrix(self, lay, shape, strides, pos):
        """A matrix operand BLAS can read (a unit stride along one of its last two dims), copying if needed."""
        z = lay.dtype.itemsize
        r, c = shape[-2], shape[-1]
        rs, cs = strides[-2], strides[-1]
        ok = (
            (cs == z or c == 1)
            and (rs >= max(c, 1) * z or r == 1)
            or (rs == z or r == 1)
            and (cs >= max(r, 1) * z or c == 1)
        )
        if ok:
            return shape, strides, lay.ptr()
        t = self.temp(shape, lay.dtype, pos)
        src = Layout(lay.base, lay.offset, shape, strides, lay.dtype)
        self.copy_loop(src, t)
        return shape, t.strides, t.ptr()

    def _rows(self, st, pos, axis: int):
        x = self.contiguous(self.get(st.args[0], pos), pos)
        shape = x.shape
        axis = axis % len(shape)
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        return x, outer, shape[axis], inner

    def _row_loop(self, x, outer, n, inner, T, stable: bool, body: list[str]):
        """For each (o, i): m = max over the axis (stable: 0 where not finite), s = sum exp(x - m); then body."""
        L = self.lines
        ex = _fn("exp", x.dtype)
        L.append(f"    for (int64_t o = 0; o < {outer}LL; o++) for (int64_t i = 0; i < {inner}LL; i++) {{")
        L.append(f"        const {T} *xr = (const {T} *){x.ptr()} + o * {n * inner}LL + i;")
        L.append(f"        {T} m = -INFINITY;")
        L.append(f"        for (int64_t j = 0; j < {n}LL; j++) m = gc_max_{T}(m, xr[j * {inner}LL]);")
        if stable:
            L.append("        if (!isfinite(m)) m = 0;")
        L.append("        double s = 0;")
        L.append(f"        for (int64_t j = 0; j < {n}LL; j++) s += (double){ex}(xr[j * {inner}LL] - m);")
        L.extend("        " + b for b in body)
        L.append("    }")

    @EMIT.register(Softmax)
    def c_softmax(self, st, pos):
        T = ctype(st.dtype)
        x, outer, n, inner = self._rows(st, pos, st.op.axis)
        out = self.store(st, pos)
        ex = _fn("exp", st.dtype)
        self._row_loop(
            x,
            outer,
            n,
            inner,
            T,
            True,
            [
                f"{T} *yr = ({T} *){out.ptr()} + o * {n * inner}LL + i;",
                f"for (int64_t j = 0; j < {n}LL; j++) yr[j * {inner}LL] = ({T})({ex}(xr[j * {inner}LL] - m) / ({T})s);",
            ],
        )

    @EMIT.register(LogSoftmax)
    def c_log_softmax(self, st, pos):
        T = ctype(st.dtype)
        axis = st.op.axis % len(st.shape)
        x, outer, n, inner = self._rows(st, pos, axis)
        out = self.store(st, pos)
        last = axis == len(st.shape) - 1  # NumPy's fast kernel (last axis) subtracts the plain max
        lg = _fn("log", st.dtype)
        self._row_loop(
            x,
            outer,
            n,
            inner,
            T,
            not last,
            [
                f"{T} *yr = ({T} *){out.ptr()} + o * {n * inner}LL + i;",
                f"const {T} ls = {lg}(({T})s);",
                f"for (int64_t j = 0; j < {n}LL; j++) yr[j * {inner}LL] = (xr[j * {inner}LL] - m) - ls;",
            ],
        )

    @EMIT.register(LogSumExp)
    def c_logsumexp(self, st, pos):
        axes = tuple(st.op.axis)
        x0 = self.get(st.args[0], pos)
        if not axes or list(axes) != list(range(axes[0], axes[-1] + 1)):
            raise Unsupported("logsumexp over axes that are not one block")
        x = self.contiguous(x0, pos)
        shape = x.shape
        outer = int(np.prod(shape[: axes[0]], dtype=np.int64))
        n = int(np.prod(shape[axes[0] : axes[-1] + 1], dtype=np.int64))
        inner = int(np.prod(shape[axes[-1] + 1 :], dtype=np.int64))
        T = ctype(st.dtype)
        out = self.store(st, pos)
        lg = _fn("log", st.dtype)
        self._row_loop(
            x, outer, n, inner, T, True, [f"(({T} *){out.ptr()})[o * {inner}LL + i] = ({T})({lg}(({T})s) + m);"]
        )

    def _labels(self, st, pos, logits_arg, labels_arg, wrap: bool):
        x = self.contiguous(self.get(logits_arg, pos), pos)
        lab = self.contiguous(self.get(labels_arg, pos), pos)
        c = x.shape[-1]
        rows = int(np.prod(x.shape[:-1], dtype=np.int64))
        if (
            lab.scalar is not None
            or np.dtype(lab.dtype).kind not in "iu"
            or int(np.prod(lab.shape, dtype=np.int64)) != rows
        ):
            raise Unsupported("labels")
        return x, lab, c, rows

    def check_labels(self, lab, rows, c, k, wrap: bool):
        lo = -c if wrap else 0
        LT = ctype(lab.dtype)
        self.lines.append(
            f"    for (int64_t r = 0; r < {rows}LL; r++) {{ "
            f"const int64_t l = (int64_t)((const {LT} *){lab.ptr()})[r];"
            f" if (l < {lo}LL || l >= {c}LL) return {k + 1}; }}"
        )

    @EMIT.register(SoftmaxCrossEntropy)
    def c_softmax_cross_entropy(self, st, pos):
        x, lab, c, rows = self._labels(st, pos, st.args[0], st.args[1], False)
        out = self.store(st, pos)
        T = ctype(st.dtype)
        LT = ctype(lab.dtype)
        self.check_labels(lab, rows, c, pos, False)
        self.lines.append("    { double tot = 0;")
        self._row_loop(
            x,
            rows,
            c,
            1,
            T,
            True,
            [
                f"const {T} lse = ({T})({_fn('log', st.dtype)}(({T})s) + m);",
                f"tot += (double)(lse - xr[((const {LT} *){lab.ptr()})[o]]);",
            ],
        )
        self.lines.append(
            f"    *({T} *){out.ptr()} = ({T})(tot / (double){rows}); }}"
            if rows
            else f"    *({T} *){out.ptr()} = NAN; }}"
        )

    @EMIT.register(PickMean)
    def c_pick_mean(self, st, pos):
        x, lab, c, rows = self._labels(st, pos, st.args[0], st.args[1], False)
        out = self.store(st, pos)
        T = ctype(st.dtype)
        LT = ctype(lab.dtype)
        self.check_labels(lab, rows, c, pos, False)
        self.lines.append("    { double tot = 0;")
        self.lines.append(
            f"    for (int64_t r = 0; r < {rows}LL; r++) tot += (double)((const {T} *){x.ptr()})"
            f"[r * {c}LL + ((const {LT} *){lab.ptr()})[r]];"
        )
        self.lines.append(
            f"    *({T} *){out.ptr()} = ({T})(tot * (-1.0 / (double){rows})); }}"
            if rows
            else f"    *({T} *){out.ptr()} = NAN; }}"
        )

    @EMIT.register(MinusOneHot)
    def c_minus_one_hot(self, st, pos):
        x, lab, c, rows = self._labels(st, pos, st.args[0], st.args[1], True)
        T = ctype(st.dtype)
        LT = ctype(lab.dtype)
        self.check_labels(lab, rows, c, pos, True)
        out = self.store(st, pos)
        self.copy_loop(x, out)
        self.lines.append(
            f"    for (int64_t r = 0; r < {rows}LL; r++) {{ "
            f"int64_t l = (int64_t)((const {LT} *){lab.ptr()})[r];"
            f" if (l < 0) l += {c}; (({T} *){out.ptr()})[r * {c}LL + l] -= 1; }}"
        )

    @EMIT.register(OneHot)
    def c_one_hot(self, st, pos):
        lab = self.contiguous(self.get(st.args[0], pos), pos)
        T = ctype(st.dtype)
        LT = ctype(lab.dtype) if lab.scalar is None else None
        c = st.shape[-1] if st.shape else 0
        rows = int(np.prod(st.shape[:-1], dtype=np.int64)) if st.shape else 0
        if LT is None or np.dtype(lab.dtype).kind not in "iu" or int(np.prod(lab.shape, dtype=np.int64)) != rows:
            raise Unsupported("one_hot labels")
        self.check_labels(lab, rows, c, pos, True)
        out = self.store(st, pos)
        self.lines.append(f"    memset({out.ptr()}, 0, {rows * c * np.dtype(st.dtype).itemsize});")
        self.lines.append(
            f"    for (int64_t r = 0; r < {rows}LL; r++) {{ "
            f"int64_t l = (int64_t)((const {LT} *){lab.ptr()})[r];"
            f" if (l < 0) l += {c}; (({T} *){out.ptr()})[r * {c}LL + l] = 1; }}"
        )

    # the arena
    def plan_arena(self) -> None:
        """First-fit offsets: an allocation may reuse bytes of one whose last read is before its first write."""
        order = sorted(range(len(self.allocs)), key=lambda i: (self.allocs[i][1], -self.allocs[i][0]))
        live: list = []  # (offset, end, last)
        top = 0
        for i in order:
            size, first, last, _ = self.allocs[i]
            live = [x for x in live if x[2] >= first]
            live.sort()
            off = 0
            for lo, hi, _ in live:
                if off + size <= lo:
                    break
                off = max(off, _align(hi))
            self.allocs[i][3] = off
            live.append((off, off + size, last))
            top = max(top, off + size)
        self.arena_bytes = _align(top)
        src = "\n".join(self.lines)
        self.lines = [re.sub(r"@(\d+)@", lambda m: str(self.allocs[int(m.group(1))][3]), src)]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _vector_operand(lay: Layout, stride: int, V: str, T: str) -> str:
    """A vector of W operand elements at i0: a scalar or one element broadcast, else W contiguous elements."""
    if lay.scalar is not None:
        return f"(({V}){{0}} + {lay.scalar})"
    if stride == 0:
        return f"(({V}){{0}} + *(const {T} *){lay.ptr()})"
    return f"gc_load_{V}({lay.ptr()} + i0 * {stride}LL)"


def _comment(k: int, st) -> str:
    """A step's comment in the C source: its number in the lowered program and its op's name (and the op of the
    user's node it computes, where that differs), nothing the user wrote: a node name could end the comment (a
    backslash or the trigraph ??/ before a newline splices lines). Only letters, digits and underscores of an
    op's name are kept. Errors name the step by its label (step.label), from Python."""
    ops = [st.op_name]
    if st.user is not None and st.user[1] != st.op_name:
        ops.append(st.user[1])
    return "    /* [%d] %s */" % (k, " of ".join(re.sub(r"[^A-Za-z0-9_]", "_", str(o))[:64] for o in ops))


# -- the evaluator --------------------------------------------------------------------------------


class _Library:
    """One dlopen of a compiled program and its entry points (gc_init given the BLAS, then gc_run, or one gc_run_i
    per C segment). It is closed (dlclose) when the last reference goes: the evaluator's, and each run's in
    flight, so no call ever runs in an unloaded library."""

    __slots__ = ("fn", "fns", "_cdll", "__weakref__")

    def __init__(self, path: str, n_segments: int, blas: tuple):
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise CompileError(f"the compiled program {path!r} does not load: {e}") from None
        finalizer = weakref.finalize(self, _dlclose, lib._handle)
        finalizer.atexit = False  # at exit the process unmaps everything itself
        self._cdll = lib
        entry = ["gc_run"] if n_segments == 1 else [f"gc_run_{i}" for i in range(n_segments)]
        try:
            fns = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in entry]
            lib.gc_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        except AttributeError as e:
            raise CompileError(f"the compiled program {path!r} lacks an entry point: {e}") from None
        lib.gc_init(*blas[:2])
        self.fn = fns[0] if n_segments == 1 else None
        self.fns = fns


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


class CEvaluator:
    """Runs a LoweredProgram as one compiled C function; falls back to the NumPy evaluator (see module doc)."""

    name = "c"

    def __init__(self, nan_check: bool = False):
        self.nan_check = nan_check
        self.lowered: Any = None
        self.source: str | None = None
        self.fallback_reason: str | None = None
        self._numpy: Any = None
        self._pool: list = []
        self._lib: _Library | None = None

    def load(self, lowered: LoweredProgram) -> "CEvaluator":
        self.lowered = lowered
        self.nan_check = self.nan_check or lowered.nan_check
        try:
            gen = self._generate(lowered, _vector_isa())
        except Unsupported as e:
            return self._untranslated(lowered, e)
        reason = self._numpy_reason(lowered, gen)
        if reason is not None:
            self.fallback_reason = reason
            return self._to_numpy()
        try:
            tc = toolchain()
            gen, path = self._compile(lowered, gen, tc["cc"])
            self._n_segments = gen.n_segments
            self._lib = _Library(path, gen.n_segments, tc["blas"])
        except CompileError as e:
            self.fallback_reason = str(e)
            _warn_once(
                "cc:" + str(e)[:200], f"graphcompiler: backend 'c' is unavailable: {e}; running on the NumPy evaluator"
            )
            return self._to_numpy()
        self.path = path
        self._call = tc["call"]
        if gen.n_segments > 1:
            self._bind_python_steps(gen)
        self._record_layout(lowered, gen)
        self._pool = [self._arena()]
        return self

    def close(self) -> None:
        """Give back the compiled library and the arenas (the Program calls this when it evicts the
        specialisation). The library is closed (dlclose) once no run holds it any more; a later run opens it
        again (compiling it again if it left the disk cache meanwhile)."""
        self._lib = None  # a run in flight keeps its own reference: closed when it ends
        self._pool = []

    def _reopen(self) -> "_Library | None":
        """The library again after close(); None when it cannot be had any more (the NumPy evaluator runs the
        program from then on, saying why once)."""
        try:
            tc = toolchain()
            path, _ = build_program(tc["cc"], self.source or "")
            lib = self._lib = _Library(path, self._n_segments, tc["blas"])
        except CompileError as e:
            self.fallback_reason = str(e)
            _warn_once("cc:" + str(e)[:200], f"graphcompiler: backend 'c' is unavailable: {e}; running on NumPy")
            self._to_numpy()
            return None
        self.path = path
        return lib

    def _untranslated(self, lowered: LoweredProgram, e: Unsupported) -> "CEvaluator":
        """The generator refused the program: say which ops once, and run it on the NumPy evaluator."""
        ops = sorted({st.op_name for st in lowered.steps if _unknown(st)}) or [str(e)]
        self.fallback_reason = f"the C backend does not translate {', '.join(ops)} ({e})"
        _warn_once(
            "ops:" + ",".join(ops),
            f"graphcompiler: {self.fallback_reason}; this program runs on the NumPy evaluator",
        )
        return self._to_numpy()

    def _numpy_reason(self, lowered: LoweredProgram, gen: Generator) -> str | None:
        """Why a translated program still runs on the NumPy evaluator (nan_check, the memory budget), or None."""
        if self.nan_check:
            return "nan_check runs on the NumPy evaluator (it checks every step's value)"
        if lowered.memory_budget is not None and gen.arena_bytes > lowered.arena_bytes:
            # the compiler's buffer plan fits the budget; C's own arena is planned from its fused loops and
            # is usually smaller, but where it is not, the budget wins over native speed
            return (
                f"under memory_budget, C's arena ({gen.arena_bytes} bytes) would exceed the compiler's budgeted "
                f"plan ({lowered.arena_bytes} bytes): this program runs on the NumPy evaluator"
            )
        return None

    def _compile(self, lowered: LoweredProgram, gen: Generator, cc: str) -> tuple[Generator, str]:
        """The shared object's path (and the generator of its source): where the compiler refuses libmvec's
        vector functions, the program is generated again without them."""
        try:
            path, self.flags = build_program(cc, self.source or "")
        except CompileError:
            if not gen.vec_used:
                raise
            gen = self._generate(lowered, None)  # without libmvec's vector functions
            path, self.flags = build_program(cc, self.source or "")
        return gen, path

    def _bind_python_steps(self, gen: Generator) -> None:
        """Where each step run by NumPy between two C segments finds its arguments and writes its value."""
        n_leaves = len(self.lowered.leaves)

        def where(lay):
            kind, k = lay.base
            if kind == "arena":
                return ("arena", gen.allocs[k][3] + lay.offset, lay)
            return (kind, k if kind == "leaf" else k - n_leaves, lay)

        self._py = [
            (st, [(a[0], a[1] if a[0] == "const" else where(a[1])) for a in args], where(out))
            for st, args, out, _ in gen.py_steps
        ]
        ops = sorted({st.op_name for st, *_ in gen.py_steps})
        self.numpy_steps = ops
        _warn_once(
            "hybrid:" + ",".join(ops),
            f"graphcompiler: the C backend runs {', '.join(ops)} through NumPy kernels between C segments",
        )

    def _record_layout(self, lowered: LoweredProgram, gen: Generator) -> None:
        """What each run needs: the leaves' dtypes and sizes (checked by the call helper), the arena and its
        constants, the result arrays to allocate, and whether the call releases the GIL."""
        meta = gen.leaf_meta
        self._spec = np.array(
            [
                [np.dtype(meta[s][1]).num, int(np.prod(meta[s][0], dtype=np.int64)) * np.dtype(meta[s][1]).itemsize]
                for s in lowered.leaves
            ],
            np.int64,
        ).tobytes()
        self._leaf_meta = [meta[s] for s in lowered.leaves]
        self._arena_bytes = gen.arena_bytes
        self._consts = [(gen.allocs[i][3], v) for i, v in gen.consts]
        outs = []  # (shape, dtype) of each result array C writes
        for r in lowered.results:
            if isinstance(r, Const):
                outs.append(((), np.dtype(np.asarray(r.value).dtype)))
            else:
                st = gen.by_slot.get(r)
                shape, dt = (st.shape, st.dtype) if st is not None else meta[r]
                outs.append((tuple(shape), np.dtype(dt)))
        self._outs = outs
        self._const_results = {k: r.value for k, r in enumerate(lowered.results) if isinstance(r, Const)}
        flops = sum(int(np.prod(st.shape, dtype=np.int64)) for st in lowered.steps)
        self._nogil = flops > 20000

    def _generate(self, lowered, vec):
        gen = Generator(lowered, vec)
        try:
            gen.blas_int = toolchain()["blas"][2]
        except CompileError:
            pass
        gen.leaf_meta = _leaf_meta(lowered)
        self.source = gen.generate()
        return gen

    def _to_numpy(self):
        from .numpy import NumpyEvaluator

        self._numpy = NumpyEvaluator(self.nan_check).load(self.lowered)
        self.run = self._numpy.run  # type: ignore[method-assign]
        return self

    def _arena(self):
        raw = np.empty(self._arena_bytes + ALIGN, np.uint8)
        shift = (-raw.__array_interface__["data"][0]) % ALIGN
        arena = raw[shift:]
        for off, v in self._consts:
            arena[off : off + v.nbytes] = v.view(np.uint8).ravel()
        return arena, arena.__array_interface__["data"][0]

    @property
    def arenas(self) -> int:
        return len(self._pool)

    def run(self, leaves: Sequence[Any]) -> list:
        """Compute one call: fresh result arrays, the C function over one arena from the pool."""
        if type(leaves) is not list:
            leaves = list(leaves)
        lib = self._lib  # held to the end of this run: close() cannot unload it under the call
        if lib is None:
            lib = self._reopen()
            if lib is None:
                return self._numpy.run(leaves)
        outs = [np.empty(s, d) for s, d in self._outs]
        pool = self._pool
        try:
            arena = pool.pop()
        except IndexError:
            arena = self._arena()
        if lib.fn is None:
            try:
                return self._run_segments(lib.fns, leaves, outs, arena)
            finally:
                pool.append(arena)
        try:
            rc = self._call_fixing(lib.fn, leaves, outs, arena[1])
        finally:
            pool.append(arena)
        if rc:
            self._fail(rc - 1, leaves)
        for k, v in self._const_results.items():
            outs[k] = np.array(v, copy=True)
        return outs

    def _call_fixing(self, fn, leaves, outs, addr) -> int:
        rc = self._call(fn, leaves, outs, self._spec, addr, self._nogil)
        while rc < 0:  # a leaf in another layout: made contiguous, then again
            k = -rc - 1
            shape, dt = self._leaf_meta[k]
            v = np.asarray(leaves[k], dtype=dt, order="C")  # ascontiguousarray makes a 0-d array 1-d
            if v.shape != tuple(shape):
                raise ExecutionError(
                    f"leaf {self.lowered.leaf_names[k]!r} has shape {v.shape}, the program "
                    f"was specialised for {tuple(shape)}"
                )
            leaves[k] = v
            rc = self._call(fn, leaves, outs, self._spec, addr, self._nogil)
        return rc

    def _run_segments(self, fns, leaves, outs, arena) -> list:
        """C segments with NumPy kernels between them (steps C does not translate)."""
        buf, addr = arena
        # object values (a loop's results) stay Python objects of this run: in the raw arena, a pointer left by
        # an earlier run (or bytes of another value) would be released as if it were one (a crash)
        objects: dict = {}

        def view(w):
            kind, k, lay = w
            if lay.dtype == object:
                return objects[kind, k]
            base = buf if kind == "arena" else leaves[k] if kind == "leaf" else outs[k]
            off = k if kind == "arena" else lay.offset
            return np.ndarray(lay.shape, lay.dtype, buffer=base, offset=off, strides=lay.strides)

        for i, fn in enumerate(fns):
            rc = self._call_fixing(fn, leaves, outs, addr)
            if rc:
                self._fail(rc - 1, leaves)
            if i < len(self._py):
                st, args, out = self._py[i]
                try:
                    vals = [a[1] if a[0] == "const" else view(a[1]) for a in args]
                    if out[2].dtype == object:
                        objects[out[0], out[1]] = st.kernel(*vals, **st.kw)
                        continue
                    np.copyto(view(out), st.kernel(*vals, **st.kw), casting="unsafe")
                except GraphCompilerError:
                    raise
                except Exception:
                    self._fail(None, leaves)
        for k, v in self._const_results.items():
            outs[k] = np.array(v, copy=True)
        return outs

    def _fail(self, k: int | None, leaves) -> None:
        """A step reported an error: the NumPy evaluator raises it with its usual message."""
        from .numpy import NumpyEvaluator

        if self._numpy is None:
            self._numpy = NumpyEvaluator(self.nan_check).load(self.lowered)
        self._numpy.run(leaves)
        if k is None:
            raise ExecutionError("a step run by NumPy inside the C program failed, but not on the NumPy evaluator")
        st = self.lowered.steps[k]
        raise ExecutionError(
            f"while computing {st.label}: a label is out of range for the {st.op_name} step "
            "(labels must be in [0, number of classes)); the C kernel checks every label"
        )


def _leaf_meta(lw: LoweredProgram) -> dict:
    """slot -> (shape, dtype) of each leaf, read off the steps' static shapes where a step reads it whole."""
    specs = getattr(lw, "leaf_specs", ())
    if len(specs) != len(lw.leaves) or any(d is None for s, _ in specs for d in s):
        raise Unsupported("the lowered program does not record its leaves' concrete shapes")
    return {s: (tuple(shape), np.dtype(dt)) for s, (shape, dt) in zip(lw.leaves, specs)}


def _unknown(st) -> bool:
    """Whether the generator has no C for the step's op (by its record: class or ufunc)."""
    op = st.op
    return not (C_EXPR(op) is not None or EMIT(op) is not None or isinstance(op, _VIEWS + _FOLDABLE))
