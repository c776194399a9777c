"""The "c" backend's disk cache trusts nothing: every shared object is checked against the sha256 recorded when it
was compiled (a replaced, truncated or unrecorded one is compiled again, never loaded), a folder other users could
write is refused for a private one, the folder is bounded by GRAPHCOMPILER_CACHE_MAX (least recently used go),
and the libraries of evicted specialisations are closed."""

import hashlib
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.backends import c as cbackend

CC = cbackend.find_compiler()
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(gc.__file__)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_DIR", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("GRAPHCOMPILER_CACHE_MAX", raising=False)
    cbackend._WARNED.clear()
    return d


def program(scale: float, n: int = 5):
    """A small program whose C source (so its cache entry) depends on `scale` and `n`."""
    g = gc.Graph("cache")
    x = g.input("x", shape=(n, 3))
    return gc.compile([gc.sum(gc.tanh(x * scale), axis=1)], backend="c"), {"x": np.linspace(-1, 1, 3 * n).reshape(n, 3)}


def expected(scale: float, n: int = 5):
    return np.tanh(np.linspace(-1, 1, 3 * n).reshape(n, 3) * scale).sum(axis=1)


def compiled_elsewhere(scale: float) -> str:
    """The cache path of program(scale), compiled by another process (this one never loads it: a library this
    process already has open would be found by name, whatever the file holds now)."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from test_c_cache import program\n"
        "p, feeds = program(%r); p.run(feeds); print(p._last.evaluator.path)\n"
    ) % (os.path.dirname(__file__), scale)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def record_matches(path: str) -> bool:
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(path + ".sha256") as f:
        return f.read().split()[0] == digest


# -- integrity ------------------------------------------------------------------------------------------------------


@needs_cc
def test_every_library_has_a_record_of_its_hash(private_cache):
    p, feeds = program(1.0)
    np.testing.assert_allclose(p.run(feeds)[0], expected(1.0), rtol=1e-13, atol=1e-13)
    path = p._last.evaluator.path
    assert os.path.dirname(path) == str(private_cache)
    assert record_matches(path)


@needs_cc
def test_a_replaced_library_is_compiled_again_not_loaded(tmp_path):
    path = compiled_elsewhere(2.0)
    marker = tmp_path / "loaded"
    evil = tmp_path / "evil.c"
    evil.write_text(
        "extern int creat(const char *, unsigned);\n"
        f'__attribute__((constructor)) static void gc_evil(void) {{ creat("{marker}", 0644); }}\n'
        "int gc_run(void **P, char *A) { return 0; }\nvoid gc_init(void *s, void *d) {}\n"
    )
    subprocess.run([CC, "-shared", "-fPIC", str(evil), "-o", path + ".new"], check=True)
    os.replace(path + ".new", path)  # same name, other code
    with pytest.warns(RuntimeWarning, match="did not match the sha256 recorded"):
        p, feeds = program(2.0)
    assert not marker.exists(), "the replaced library was loaded"
    assert p._last.evaluator.fallback_reason is None and p._last.evaluator.path == path
    np.testing.assert_allclose(p.run(feeds)[0], expected(2.0), rtol=1e-13, atol=1e-13)
    assert record_matches(path)


@needs_cc
def test_a_replaced_call_helper_is_copied_again_not_loaded(private_cache, tmp_path):
    compiled_elsewhere(2.5)  # a fresh process builds the call helper (a Python extension) into the folder
    helpers = [f for f in os.listdir(private_cache) if f.startswith("gc_call_")]
    assert len(helpers) == 1
    marker = tmp_path / "loaded"
    evil = tmp_path / "evil.c"
    evil.write_text(
        "extern int creat(const char *, unsigned);\n"
        f'__attribute__((constructor)) static void gc_evil(void) {{ creat("{marker}", 0644); }}\n'
    )
    helper = os.path.join(private_cache, helpers[0])
    subprocess.run([CC, "-shared", "-fPIC", str(evil), "-o", helper], check=True)
    compiled_elsewhere(2.5)  # the next process finds it replaced
    assert not marker.exists(), "the replaced call helper was loaded"


@needs_cc
@pytest.mark.parametrize("damage", ["truncated", "empty", "no record", "bad record", "a folder"])
def test_a_damaged_entry_is_compiled_again(damage):
    path = compiled_elsewhere(3.0)
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif damage == "empty":
        open(path, "wb").close()
    elif damage == "no record":
        os.unlink(path + ".sha256")
    elif damage == "bad record":
        with open(path + ".sha256", "w") as f:
            f.write("not a hash")
    else:
        os.unlink(path)
        os.mkdir(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p, feeds = program(3.0)
        got = p.run(feeds)
    np.testing.assert_allclose(got[0], expected(3.0), rtol=1e-13, atol=1e-13)
    ev = p._last.evaluator
    if damage == "a folder":  # cannot be replaced by a file: another name, or NumPy, and it says why
        assert ev.fallback_reason is None or "cache" in ev.fallback_reason
    else:
        assert ev.fallback_reason is None and ev.path == path and record_matches(path)


# -- the folder -----------------------------------------------------------------------------------------------------


@needs_cc
@pytest.mark.parametrize(
    "mode, why", [(0o777, "writable by group and others"), (0o775, "writable by group"), (0o757, "writable by others")]
)
def test_a_folder_others_can_write_is_refused_for_a_private_one(private_cache, tmp_path, mode, why):
    private_cache.mkdir()
    os.chmod(private_cache, mode)
    with pytest.warns(RuntimeWarning, match=f"not using the cache folder .*{why}"):
        p, feeds = program(4.0)
    np.testing.assert_allclose(p.run(feeds)[0], expected(4.0), rtol=1e-13, atol=1e-13)
    used = os.path.dirname(p._last.evaluator.path)
    assert used != str(private_cache) and os.listdir(private_cache) == []
    st = os.stat(used)
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077 == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        program(4.5)


@needs_cc
def test_when_the_default_folder_is_unsafe_too_a_private_temporary_one_is_used(private_cache, tmp_path):
    default = tmp_path / "xdg" / "graphcompiler"
    for d in (private_cache, default):
        d.mkdir(parents=True)
        os.chmod(d, 0o777)
    with pytest.warns(RuntimeWarning, match="not using the cache folder"):
        p, feeds = program(4.25)
    np.testing.assert_allclose(p.run(feeds)[0], expected(4.25), rtol=1e-13, atol=1e-13)
    used = os.path.dirname(p._last.evaluator.path)
    assert used not in (str(private_cache), str(default))
    st = os.stat(used)
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


@needs_cc
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_folder_owned_by_another_user_is_refused(private_cache):
    private_cache.mkdir(mode=0o700)
    os.chown(private_cache, os.getuid() + 12345, -1)
    with pytest.warns(RuntimeWarning, match="not using the cache folder .*owned by user"):
        p, feeds = program(5.0)
    assert os.path.dirname(p._last.evaluator.path) != str(private_cache)
    np.testing.assert_allclose(p.run(feeds)[0], expected(5.0), rtol=1e-13, atol=1e-13)


@needs_cc
def test_a_cache_path_that_is_a_file_is_refused(private_cache):
    private_cache.write_text("")
    with pytest.warns(RuntimeWarning, match="not using the cache folder .*not a folder"):
        p, feeds = program(6.0)
    np.testing.assert_allclose(p.run(feeds)[0], expected(6.0), rtol=1e-13, atol=1e-13)
    assert p._last.evaluator.fallback_reason is None


def test_a_new_cache_folder_is_private(private_cache):
    assert cbackend.cache_dir() == str(private_cache)
    assert stat.S_IMODE(os.stat(private_cache).st_mode) & 0o077 == 0


# -- bounded on disk ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        ("1000", 1000),
        ("200M", 200 << 20),
        ("512k", 512 << 10),
        ("1G", 1 << 30),
        ("1.5MiB", 3 << 19),
        ("64KB", 65536),
        ("0", 0),
    ],
)
def test_cache_max_sizes(monkeypatch, text, size):
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_MAX", text)
    assert cbackend.cache_max() == size


def test_a_bad_cache_max_says_so_and_keeps_the_default(monkeypatch):
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_MAX", "lots")
    with pytest.warns(RuntimeWarning, match="GRAPHCOMPILER_CACHE_MAX='lots'"):
        assert cbackend.cache_max() == cbackend.CACHE_MAX
    monkeypatch.delenv("GRAPHCOMPILER_CACHE_MAX")
    assert cbackend.cache_max() == cbackend.CACHE_MAX == 256 << 20


def folder_bytes(d) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


@needs_cc
def test_the_least_recently_used_entries_go_past_the_size_limit(private_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_DIR", str(tmp_path / "helper"))
    cbackend.toolchain()  # the call helper (built once per process) lives elsewhere: the folder holds programs only
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_DIR", str(private_cache))

    def use(n):
        p, feeds = program(9.0, n=n)
        np.testing.assert_allclose(p.run(feeds)[0], expected(9.0, n), rtol=1e-13, atol=1e-13)
        return os.path.basename(p._last.evaluator.path)

    names = {1: use(1)}
    one = folder_bytes(private_cache)  # a library and its record
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_MAX", str(int(one * 3.5)))
    names[2], names[3] = use(2), use(3)
    assert set(os.listdir(private_cache)) == {f"{names[k]}{r}" for k in (1, 2, 3) for r in ("", ".sha256")}
    use(1)  # used again: now the most recently used
    names[4] = use(4)  # over the limit: 2, the least recently used, goes
    assert set(os.listdir(private_cache)) == {f"{names[k]}{r}" for k in (1, 3, 4) for r in ("", ".sha256")}
    names[5] = use(5)
    assert set(os.listdir(private_cache)) == {f"{names[k]}{r}" for k in (1, 4, 5) for r in ("", ".sha256")}
    assert folder_bytes(private_cache) <= one * 3.5
    assert use(2) == names[2]  # an evicted entry is compiled again when asked for
    assert names[2] in os.listdir(private_cache)


# -- bounded in memory ----------------------------------------------------------------------------------------------


def mapped(folder) -> set:
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if str(folder) in line}


@needs_cc
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_evicted_specialisations_close_their_libraries(private_cache):
    g = gc.Graph("batches")
    x = g.input("x", shape=(None, 3))
    p = gc.compile([gc.sum(gc.exp(x) * 2.0)], backend="c", cache_size=4)
    for b in range(1, 13):
        np.testing.assert_allclose(p.run({"x": np.ones((b, 3))})[0], 6 * b * np.e, rtol=1e-13, atol=1e-13)
    libs = {f for f in mapped(private_cache) if os.path.basename(f).startswith("gc_") and "gc_call" not in f}
    assert len(libs) <= 4, sorted(libs)
    assert len([f for f in os.listdir(private_cache) if f.endswith(".so")]) >= 12  # still on disk


@needs_cc
def test_a_closed_evaluator_opens_its_library_again():
    p, feeds = program(8.0)
    ev = p._last.evaluator
    ev.close()
    ev.close()  # twice is fine
    np.testing.assert_allclose(p.run(feeds)[0], expected(8.0), rtol=1e-13, atol=1e-13)
    os.unlink(ev.path)  # even when the file went meanwhile
    ev.close()
    np.testing.assert_allclose(p.run(feeds)[0], expected(8.0), rtol=1e-13, atol=1e-13)


@needs_cc
def test_closing_while_other_threads_run_never_unloads_a_library_under_a_call():
    import threading

    p, feeds = program(10.0, n=200)
    ev = p._last.evaluator
    want = expected(10.0, 200)
    errors: list = []
    stop = threading.Event()

    def work():
        try:
            for _ in range(60):
                np.testing.assert_allclose(p.run(feeds)[0], want, rtol=1e-13, atol=1e-13)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def closer():
        try:
            while not stop.is_set():
                ev.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    c = threading.Thread(target=closer)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: closes land between and during runs
    try:
        c.start()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        stop.set()
        c.join()
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


@needs_cc
def test_a_library_that_cannot_be_had_again_after_close_runs_on_numpy(monkeypatch):
    p, feeds = program(11.0)
    ev = p._last.evaluator
    ev.close()

    def refuse(*args, **kw):
        raise cbackend.CompileError("the compiler is gone")

    monkeypatch.setattr(cbackend, "build_program", refuse)
    with pytest.warns(RuntimeWarning, match="the compiler is gone"):
        got = p.run(feeds)
    np.testing.assert_allclose(got[0], expected(11.0), rtol=1e-13, atol=1e-13)
    assert "the compiler is gone" in ev.fallback_reason
    np.testing.assert_allclose(p.run(feeds)[0], expected(11.0), rtol=1e-13, atol=1e-13)
