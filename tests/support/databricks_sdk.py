#!/usr/bin/env python3
"""Runs statements through the vendor's own client, `databricks-sdk`'s
`WorkspaceClient(...).statement_execution`, and prints what it read.

Provides: the proof that tests/support/databricks_server.py answers as the
real service does, as far as the official client can tell: each statement
is executed with `disposition=EXTERNAL_LINKS`, `format=ARROW_STREAM`,
`wait_timeout="0s"` (so every one is handed off and polled with
`get_statement`), every chunk's link taken from the answer or from
`get_statement_result_chunk_n`, each link downloaded without credentials and
read with pyarrow. With `--compare FILE.arrow` (an Arrow IPC stream written
by the Rust test from what the daemon's backend read for the last
statement), the two are rendered the same way and both printed.

Input (argv[1], JSON): {"host", "token" | "client_id"+"client_secret",
"warehouse_id", "catalog"?, "schema"?, "statements": [sql, ...]}.
Output (stdout, JSON): {"results": [{"state", "error"?, "columns":
[{"name", "type_name", "type_text"}], "total_chunk_count", "chunks_read",
"rows": [[cell, ...]]}], "compare_rows"?: [[cell, ...]]}. Cells: null, int,
float (NaN/inf as strings), str, bytes as {"hex"}, decimals as strings,
timestamps as ISO text with microseconds (and +00:00 when zoned), dates as
ISO, lists as lists.

Assumes: the `databricks` venv (requirements-databricks.txt).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import sys
import time

import pyarrow as pa
import pyarrow.ipc as ipc
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.sql import Disposition, Format, StatementState


def cell(v):
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, int) or isinstance(v, str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, dt.datetime):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, list):
        return [cell(x) for x in v]
    return repr(v)


def rows(table: pa.Table):
    return [[cell(x) for x in r.values()] for r in table.to_pylist()]


def run(w: WorkspaceClient, req: dict, sql: str) -> dict:
    resp = w.statement_execution.execute_statement(
        statement=sql,
        warehouse_id=req["warehouse_id"],
        catalog=req.get("catalog"),
        schema=req.get("schema"),
        disposition=Disposition.EXTERNAL_LINKS,
        format=Format.ARROW_STREAM,
        wait_timeout="0s",
    )
    deadline = time.time() + 60
    while resp.status.state in (StatementState.PENDING, StatementState.RUNNING):
        if time.time() > deadline:
            w.statement_execution.cancel_execution(resp.statement_id)
            raise SystemExit(f"statement {resp.statement_id} still running after 60 s")
        time.sleep(0.05)
        resp = w.statement_execution.get_statement(resp.statement_id)
    out = {"state": resp.status.state.value}
    if resp.status.state != StatementState.SUCCEEDED:
        err = resp.status.error
        out["error"] = {"error_code": err.error_code.value if err and err.error_code else None, "message": err.message if err else None}
        return out
    manifest = resp.manifest
    out["columns"] = [
        {"name": c.name, "type_name": c.type_name.value if c.type_name else None, "type_text": c.type_text}
        for c in manifest.schema.columns or []
    ]
    out["total_chunk_count"] = manifest.total_chunk_count
    tables = []
    links = list(resp.result.external_links or []) if resp.result else []
    for index in range(manifest.total_chunk_count or 0):
        link = next((l for l in links if l.chunk_index == index), None)
        if link is None:
            data = w.statement_execution.get_statement_result_chunk_n(resp.statement_id, index)
            link = next(l for l in data.external_links if l.chunk_index == index)
        # A pre-signed link: no Authorization header, only the link's own headers.
        got = requests.get(link.external_link, headers=link.http_headers or {}, timeout=60)
        got.raise_for_status()
        tables.append(ipc.open_stream(got.content).read_all())
    out["chunks_read"] = len(tables)
    out["rows"] = [r for t in tables for r in rows(t)]
    return out


def main() -> None:
    req = json.loads(open(sys.argv[1]).read())
    if "token" in req:
        w = WorkspaceClient(host=req["host"], token=req["token"], auth_type="pat")
    else:
        w = WorkspaceClient(host=req["host"], client_id=req["client_id"], client_secret=req["client_secret"], auth_type="oauth-m2m")
    result = {"results": [run(w, req, sql) for sql in req["statements"]]}
    if len(sys.argv) > 3 and sys.argv[2] == "--compare":
        with open(sys.argv[3], "rb") as f:
            result["compare_rows"] = rows(ipc.open_stream(f.read()).read_all())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
