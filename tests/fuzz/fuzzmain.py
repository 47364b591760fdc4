"""The atheris side: build a target, write its seeds into the corpus directory, fuzz.

Each ``fuzz_<target>.py`` is a libFuzzer harness (``TestOneInput``); run one by hand with

    python tests/fuzz/fuzz_envelope.py CORPUS_DIR -atheris_runs=200000

(libFuzzer flags: ``-max_total_time=SECONDS``, ``-timeout=``, ``-seed=``...). The first
directory argument is the corpus: the target's valid encodings are written into it before the
run, so every run starts from them. ``.ci/fuzz`` runs every harness for a bounded time.
"""

from __future__ import annotations

import atexit
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["kmsbeam"]):
    import kmsbeam  # noqa: F401  (instrumented for coverage feedback)
    from fuzzlib import Target, write_seeds
    from targets import TARGETS

_built: dict[str, Target] = {}


def target(name: str) -> Target:
    built = _built.get(name)
    if built is None:
        workdir = tempfile.TemporaryDirectory(prefix=f"kmsbeam-fuzz-{name}-")
        built = _built[name] = TARGETS[name](Path(workdir.name))
        atexit.register(workdir.cleanup)
        atexit.register(built.close)
    return built


def run(name: str, argv: list[str] | None = None) -> None:
    """Write the seeds into the corpus directory (the first non-flag argument), then fuzz."""
    argv = list(sys.argv if argv is None else argv)
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    if corpus:
        write_seeds(target(name), Path(corpus[0]))
    atheris.Setup(argv, lambda data: target(name).check(data))
    atheris.Fuzz()
