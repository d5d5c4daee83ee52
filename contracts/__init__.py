"""Every message of docs/contract.md as pydantic v2 models; `CONTRACT_VERSION` is its version.

- `contracts.topics`: the five topic names for a prefix (`identity.` by default).
- `contracts.inbound`: `sdk-events`, `commands` and `import-rows` messages, strict and
  closed, and `parse_inbound(topic_kind, raw)` which turns a record into a model or an
  `InboundError` (`bad_json`, `unknown_type`, `invalid_fields`) for the dead letter.
- `contracts.outbound`: `UserChanged`, `DeadLetter` and the user JSON (`UserView`).
- `contracts/schemas/*.json` and `contracts/asyncapi.json`: generated from the models by
  `python -m contracts.export` and checked in; a test fails when they are stale.

A change of the external contract bumps `CONTRACT_VERSION` (major for a breaking change)
and is written down in docs/contract.md. Nothing in this package does I/O at import time.
"""

CONTRACT_VERSION = "1.4.0"
