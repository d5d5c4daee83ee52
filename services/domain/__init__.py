"""The domain core: every rule of docs/DOMAIN.md, pure (no I/O, no clock, no randomness).

Its modules run compiled by mypyc when a build matching these sources exists
(services/compiled_core.py, UNIFIER_CORE); `CORE` says which runs in this process.
"""

from services.compiled_core import choose

CORE = choose(__path__)
