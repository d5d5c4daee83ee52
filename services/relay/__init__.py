"""The outbox relay. Its partitioner (partitioner.py, the default partitioner's murmur2)
runs compiled with the domain core, from the same build, whenever the domain's modules
do (services/compiled_core.py `COMPILED`, `services.domain.CORE`), and from its source
otherwise."""

from services.compiled_core import follow
from services.domain import CORE

follow(__path__, __name__, CORE)
