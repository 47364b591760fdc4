"""The progress line: written only to a terminal, and cleared at the end."""

from __future__ import annotations

import io
import threading

from kmsbeam.pipelines.summary import Progress


class _Terminal(io.StringIO):
    """A text stream that says it is a TTY and signals its first write."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


def test_progress_writes_elapsed_seconds_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress("encrypting data.jsonl", stream, interval=0.01)
    progress.start()
    assert stream.written.wait(10)
    progress.stop()
    text = stream.getvalue()
    assert text.startswith("\rkmsbeam: encrypting data.jsonl ... ") and " s" in text
    assert text.endswith("\r\033[K")


def test_progress_is_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("encrypting", stream, interval=0.01)
    progress.start()
    progress.stop()
    assert not progress.enabled and stream.getvalue() == ""
