"""The JSONL/CSV line reader: byte ranges cover every line exactly once, in linear time."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from kmsbeam.pipelines._read import read_lines


def _reference(data: bytes, limit: int | None) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    offset = 0
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    for piece in pieces:
        line = piece[:-1] if piece.endswith(b"\r") else piece
        out.append((offset, None if limit is not None and len(piece) > limit else line))
        offset += len(piece) + 1
    return out


def _ranged(data: bytes, size: int, limit: int | None, chunk: int = 1 << 20) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    for start in range(0, max(len(data), 1), size):
        end = -1 if start + size >= len(data) else start + size
        out += read_lines(io.BytesIO(data), start, end, limit, chunk=chunk)
    return out


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xff"]), max_size=60).map(b"".join),
    size=st.integers(1, 40),
    limit=st.none() | st.integers(0, 8),
    chunk=st.integers(1, 12) | st.just(1 << 20),
)  # fmt: skip
def test_ranges_read_every_line_once(data: bytes, size: int, limit: int | None, chunk: int) -> None:
    """Lines cut by a chunk's end (``chunk`` bytes read at a time) read as any other line."""
    assert _ranged(data, size, limit, chunk) == _reference(data, limit)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n"]), max_size=40).map(b"".join),
    chunk=st.integers(1, 12),
)  # fmt: skip
def test_kept_ends_give_back_the_file(data: bytes, chunk: int) -> None:
    lines = read_lines(io.BytesIO(data), keep_ends=True, chunk=chunk)
    assert b"".join(line for _, line in lines if line is not None) == data


def test_over_long_lines_are_not_held_and_ends_can_be_kept() -> None:
    data = b"short\r\n" + b"x" * (3 << 20) + b"\nlast"
    lines = list(read_lines(io.BytesIO(data), limit=1 << 20))
    assert lines == [(0, b"short"), (7, None), (7 + (3 << 20) + 1, b"last")]
    kept = list(read_lines(io.BytesIO(b"a\r\nb\n\nc"), keep_ends=True))
    assert [line for _, line in kept] == [b"a\r\n", b"b\n", b"\n", b"c"]


def test_ranges_cover_a_file_and_a_compressed_file_is_one_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from apache_beam.io.filesystem import FileMetadata
    from apache_beam.io.filesystems import FileSystems

    from kmsbeam.pipelines._read import ranges

    lines = [f'{{"id": {i}, "pad": "{"x" * (i % 7)}"}}'.encode() for i in range(200)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    size = path.stat().st_size
    parts = list(ranges(FileMetadata(str(path), size), size=100))
    assert parts[0] == (str(path), 0, 100) and parts[-1][2] == -1 and len(parts) == -(-size // 100)
    got = []
    for name, start, end in parts:
        with FileSystems.open(name) as f:
            got += [line for _, line in read_lines(f, start, end, 1 << 20)]
    assert got == lines
    assert list(ranges(FileMetadata(str(tmp_path / "in.jsonl.gz"), 10**9), size=100)) == [
        (str(tmp_path / "in.jsonl.gz"), 0, -1)]
