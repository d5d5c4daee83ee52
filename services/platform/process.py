"""What a child process of a supervising `unifier` process needs on every platform."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG): an orphan would keep working, unsupervised, beside the parent's
    replacement (serving its port, or holding partitions in its consumer group)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)
