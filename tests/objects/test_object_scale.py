"""Scale: 2 GiB streamed through encrypt and decrypt in one process, peak memory bounded.

The data is generated on the fly (a 1 MiB random block stamped with its index) and never
stored: a writer thread encrypts into a pipe, the main thread decrypts from the pipe (a
non-seekable stream) and checks every block. Peak RSS is the child's ``VmHWM``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, struct, sys, threading, time
    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectReader, ObjectWriter

    total_mib = int(sys.argv[1])
    source = open_key_source("local:alias/scale", create=True)
    block = bytearray(os.urandom(1 << 20))
    rfd, wfd = os.pipe()

    def produce():
        with os.fdopen(wfd, "wb") as sink:
            with ObjectWriter(sink, source, close_raw=False) as writer:
                for i in range(total_mib):
                    struct.pack_into(">Q", block, 0, i)
                    writer.write(block)

    started = time.perf_counter()
    thread = threading.Thread(target=produce)
    thread.start()
    out, seen = bytearray(1 << 20), 0
    tail, expected = memoryview(out)[8:], memoryview(block)[8:]  # compared without copies
    with os.fdopen(rfd, "rb") as source_pipe:
        reader = ObjectReader(source_pipe, source)
        while True:
            n = reader.readinto(out)
            if not n:
                break
            assert n == len(out) and struct.unpack_from(">Q", out)[0] == seen
            assert tail == expected
            seen += 1
    thread.join()
    elapsed = time.perf_counter() - started
    # VmHWM: this process image's peak RSS. (ru_maxrss would also count the parent's peak
    # before the fork: Linux carries it over exec, so under pytest it reports pytest's size.)
    with open("/proc/self/status") as status:
        rss = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
    print(json.dumps({"blocks": seen, "peak_rss": rss, "seconds": elapsed}))
""")


def run(total_mib: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(total_mib)], capture_output=True,
                          text=True, timeout=600, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_small_stream_through_a_pipe_round_trips() -> None:
    assert run(8)["blocks"] == 8


@pytest.mark.slow
def test_two_gib_stream_with_bounded_memory() -> None:
    result = run(2048)
    print(f"2 GiB encrypt+decrypt: peak RSS {result['peak_rss'] / 2**20:.0f} MiB, "
          f"{result['seconds']:.1f} s, {2 / result['seconds']:.2f} GiB/s")  # fmt: skip
    assert result["blocks"] == 2048
    assert result["peak_rss"] < 200 * 2**20
