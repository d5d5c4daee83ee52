"""The live projection. Its synchronous hot modules (services/compiled_core.py
`COMPILED`) run compiled with the domain core, from the same build, whenever the
domain's modules do (`services.domain.CORE`), and from their source otherwise."""

from services.compiled_core import follow
from services.domain import CORE

follow(__path__, __name__, CORE)
