"""progress_bar: a live bar on a terminal, a line at most every ``log_interval`` seconds in a log."""

import io
import sys

from d4lenspinn import progress
from d4lenspinn.progress import LOG_INTERVAL_S, progress_bar


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_refreshes_at_most_once_per_interval(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert not progress.on_terminal()
    with progress_bar(range(5), desc="work") as bar:
        assert bar.mininterval == LOG_INTERVAL_S and bar.maxinterval >= LOG_INTERVAL_S
        assert list(bar) == list(range(5))
    assert "work" in log.getvalue()  # still reports, just rarely
    with progress_bar(total=3, log_interval=5.0) as bar:
        assert bar.mininterval == 5.0


def test_on_a_terminal_keeps_the_live_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _FakeTerminal())
    assert progress.on_terminal()
    with progress_bar(range(3)) as bar:
        assert bar.mininterval < 1.0
        assert sum(bar) == 3


def test_disable_is_honoured(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress_bar(range(3), disable=True) as bar:
        assert sum(bar) == 3
    assert sys.stderr.getvalue() == ""
