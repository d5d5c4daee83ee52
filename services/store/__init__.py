"""PostgreSQL: the state's reads and writes. Its pure row builders (rows.py) run compiled
with the domain core, from the same build, whenever the domain's modules do
(services/compiled_core.py `COMPILED`, `services.domain.CORE`)."""

from services.compiled_core import follow
from services.domain import CORE

follow(__path__, __name__, CORE)
