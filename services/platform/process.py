"""What a child process of a supervising `unifier` process needs on every platform."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.platform.config import Settings


def die_with_parent() -> None:
    """SIGTERM this process when its parent dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG): an orphan would keep working, unsupervised, beside the parent's
    replacement (serving its port, or holding partitions in its consumer group)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)


def run_child(work: Callable[[Settings], Coroutine[Any, Any, int]], what: str) -> int:
    """A supervised child's whole life (projections.py, relay_process.py): it dies with
    its parent, reads the settings the parent wrote on its stdin (the broker and database
    in use, never embedded ones), sets up logging and the broker's client, and runs
    `work`; an unexpected error is logged and exits 1, which stops the parent too."""
    import orjson

    from services.platform import kafka, logs
    from services.platform.config import Settings

    die_with_parent()
    settings = Settings.model_validate(orjson.loads(sys.stdin.buffer.read()))
    logs.setup(settings.log_level or "INFO", settings.log_format)
    kafka.use(settings)
    try:
        return asyncio.run(work(settings))
    except Exception:
        logging.getLogger("unifier").critical("%s stopped by an unexpected error", what, exc_info=True)
        return 1
