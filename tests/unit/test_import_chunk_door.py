"""The door for `import.rows` chunks (contract 1.3.0): the fast decoder
(`decode_import_rows`) answers what `parse_import_rows` answers — the same rows with the
same values, the same refusals — and a chunk's rows are what the one-row `import.row`
messages they stand for give at the door (docs/decisions.md, "Issue 14, session 9")."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contracts.inbound import (
    MAX_CHUNK_BYTES,
    MAX_TEXT,
    MAX_VALUE,
    InboundError,
    parse_import_rows,
    parse_inbound,
)
from services.projection.decoding import decode_import_rows

HEAD = {"eventId": "imp_1:rows:2", "type": "import.rows", "channelId": "ch_1", "occurredAt": 1_000, "importId": "imp_1"}


def chunk(rows: Any, **head: Any) -> bytes:
    return orjson.dumps({**HEAD, **head, "rows": rows})


def row(n: int, **cells: str) -> dict[str, Any]:
    return {"rowNumber": n, "cells": {"memberId": f"m{n}", **cells}}


def outcome(answer: Any) -> Any:
    if answer is None or isinstance(answer, InboundError):
        return answer if answer is None else ("refused", answer.code, answer.message)
    return [("refused", r.code, r.message) if isinstance(r, InboundError) else r.model_dump() for r in answer]


def both(raw: bytes) -> tuple[Any, Any]:
    answers = []
    for parse in (parse_import_rows, decode_import_rows):
        try:
            answers.append(outcome(parse(raw)))
        except InboundError as err:
            answers.append(("chunk refused", err.code, err.message))
    return answers[0], answers[1]


CASES = {
    "plain": chunk([row(2), row(3, name="B"), {**row(4), "rowError": "unreadable"}]),
    "a cell too long": chunk([row(2), row(3, name="x" * (MAX_VALUE + 1))]),
    # Keys are Text: bounded by decoding.py `_cells_ok`, not the struct (issue 14, session 18).
    "a cell's key too long": chunk([row(2), {"rowNumber": 3, "cells": {"k" * (MAX_TEXT + 1): "x"}}]),
    "a cell's key at the limit": chunk([row(2), {"rowNumber": 3, "cells": {"k" * MAX_TEXT: "x"}}]),
    "U+0000 in a cell": chunk([row(2, name="a\u0000b"), row(3)]),
    "a lone surrogate": chunk([row(2)]).replace(b'"m2"', b'"m\\ud800"'),
    "a row number as text": chunk([row(2), {"rowNumber": "3", "cells": {}}]),
    "row 1": chunk([{"rowNumber": 1, "cells": {}}]),
    "an extra field": chunk([{**row(2), "type": "boot"}]),
    "a row not an object": chunk([row(2), 3]),
    "no rows": chunk([]),
    "too many rows": chunk([row(n) for n in range(2, 1_003)]),
    "rows an object": chunk({"rowNumber": 2}),
    "a bad envelope": chunk([row(2)], occurredAt=-1),
    "an importId too long for the rows' eventIds": chunk([row(2)], importId="i" * 127),
    "escaped type": chunk([row(2)]).replace(b'"import.rows"', b'"import\\u002erows"'),
    "another type": orjson.dumps({**HEAD, "type": "import.row", "rowNumber": 2, "cells": {}}),
    "not JSON": b'{"type": "import.rows", "rows": [',
    "too large": chunk([row(n, name="x" * 3000) for n in range(2, 100)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_fast_chunk_decoder_answers_as_the_door(name: str) -> None:
    slow, fast = both(CASES[name])
    assert fast == slow


def test_a_chunks_rows_are_the_import_row_messages_they_stand_for() -> None:
    raw = CASES["plain"]
    rows = decode_import_rows(raw)
    assert rows is not None
    for r in orjson.loads(raw)["rows"]:
        one = {k: v for k, v in HEAD.items() if k != "eventId"} | {"eventId": f"imp_1:{r['rowNumber']}", "type": "import.row", **r}
        expected = parse_inbound("import-rows", orjson.dumps(one)).model_dump()
        assert next(x for x in rows if not isinstance(x, InboundError) and x.rowNumber == r["rowNumber"]).model_dump() == expected


def test_what_refuses_a_chunk_or_a_row_says_why() -> None:
    assert both(CASES["too large"])[0] is None  # not read as a chunk: parse_inbound says too_large
    with pytest.raises(InboundError, match=f"limit is {MAX_CHUNK_BYTES}"):
        parse_inbound("import-rows", CASES["too large"])
    with pytest.raises(InboundError, match="limit is 65536"):  # any other message keeps its limit
        parse_inbound("import-rows", orjson.dumps({**HEAD, "type": "import.row", "rowNumber": 2, "cells": {"a": "x" * 70_000}}))
    slow, _ = both(CASES["a row number as text"])
    assert slow[1][:2] == ("refused", "invalid_fields") and slow[1][2].startswith("rows[1]: rowNumber:")
    slow, _ = both(CASES["U+0000 in a cell"])
    assert "U+0000" in slow[0]["rowError"] and slow[0]["cells"]["name"] == "a\ufffdb"  # the row fails (I15)
    assert both(CASES["no rows"])[0][:2] == ("chunk refused", "invalid_fields")
