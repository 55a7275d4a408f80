"""The test harness itself: the guard that fails a test writing to the real home
directory sees exactly the writes of the test process (conftest.home_write)."""

from __future__ import annotations

import os

from conftest import REAL_HOME, home_write


def test_a_write_under_the_real_home_is_seen() -> None:
    target = str(REAL_HOME / ".kube" / "config")
    assert home_write("open", (target, "w", os.O_WRONLY | os.O_CREAT)) == target
    assert home_write("os.mkdir", (str(REAL_HOME / ".cache" / "x"), 0o777, None))
    assert home_write("os.rename", ("/tmp/a", str(REAL_HOME / "b"), None, None))


def test_reads_and_writes_elsewhere_are_not() -> None:
    assert home_write("open", (str(REAL_HOME / ".gitconfig"), "r", os.O_RDONLY)) is None
    assert home_write("open", ("/tmp/x", "w", os.O_WRONLY | os.O_CREAT)) is None
    assert home_write("open", (3, None, os.O_WRONLY)) is None  # an inherited descriptor
    assert home_write("os.mkdir", (str(REAL_HOME) + "-other/x", 0o777, None)) is None
    assert home_write("socket.connect", (None, ("127.0.0.1", 1))) is None
    # a venv's python is a symlink *to* the real home's interpreter: only the link is made
    assert home_write("os.symlink", (str(REAL_HOME / ".pyenv/bin/python3"), "/tmp/v/python",
                                     None)) is None
    assert home_write("os.symlink", ("/tmp/x", str(REAL_HOME / "link"), None))
