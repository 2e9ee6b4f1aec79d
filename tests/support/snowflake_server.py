#!/usr/bin/env python3
"""A Snowflake-protocol test server for materializer's integration tests.

Provides: one process serving fakesnow (DuckDB-backed Snowflake emulator,
pinned in requirements-fakesnow.txt) on 127.0.0.1:PORT, wrapped in a small
compatibility layer so the Rust crate `snowflake-api` 0.14 accepts its replies:

  * login replies gain `sessionId`, `masterToken`, `validityInSeconds`,
    `masterValidityInSeconds`, `sessionInfo.roleName/warehouseName`;
  * query replies gain `returned`, `finalRoleName`, `finalWarehouseName`,
    `version`, `parameters`; error replies gain a full `data` object
    (`age`, `errorCode`, `internalError`, `queryId`, `sqlState`);
  * Arrow results are rewritten so a NULL TIMESTAMP is null at the struct level
    (fakesnow leaves the struct valid with a null `epoch` child, which arrow-rs
    rejects as "unmasked nulls for non-nullable StructArray field");
  * `POST /session/token-request` (session renewal, absent from fakesnow) is
    answered by handing back the same session token;
  * statements of one session are queued: fakesnow's per-session DuckDB cursor
    refuses concurrent statements, Snowflake runs them.

Optionally (`--handoff-after-ms N`, env `SNOWFLAKE_SERVER_HANDOFF_AFTER_MS`,
or at run time `POST /__test/handoff?after_ms=N|off`) it plays a statement
that outlives Snowflake's ~45 s answer window, as real Snowflake does: every
query-request is answered at once with the statement's handle (`"code":
"333334"`, `data.queryId`, `data.getResultUrl` = `/queries/{id}/result`,
`data.queryAbortsAfterSecs`) while the statement runs in the background;
a GET of that URL (with the same `Authorization` as the query, else 390104)
answers `"code": "333333"` with the same data until the statement has run N ms,
then the real (patched) result, once. `POST /queries/v1/abort-request`
(`{"sqlText", "requestId"}`, the `requestId` of the original query-request)
cancels a handed-off statement not yet answered (its result GET then answers
`000604 SQL execution canceled`), else answers `000605`; every abort-request
is recorded and logged. `GET /__test/handoff` returns `{"after_ms",
"handed_off", "polls", "aborts": [{"queryId" (null when none matched),
"requestId", "sqlText", "cancelled"}]}`.

Optionally (`--chunk-rows N`, env `SNOWFLAKE_SERVER_CHUNK_ROWS`, or at run time
`POST /__test/chunks?rows=N|off[&delay_ms=D][&fail=1]`) it answers an Arrow result of
more than N rows as Snowflake answers a large one: N rows inline in
`rowsetBase64`, the rest in `data.chunks[]` (`url`, `rowCount`,
`uncompressedSize`) of N rows each, gzip'd Arrow IPC streams served by this
server at `/__chunks/{result}/{i}` with `Content-Encoding: gzip`, only to GETs
carrying the key handed out in `data.chunkHeaders`
(`x-amz-server-side-encryption-customer-key`, also in `qrmk`) and no
`Authorization` (else 403, counted as refused); each GET waits D ms first;
with fail=1 every chunk GET answers 503 (counted as failed).
`GET /__test/chunks` returns `{"rows", "delay_ms", "results_chunked",
"chunks_listed", "chunks_served", "max_in_flight" (most chunk GETs answered
at once), "refused", "failed"}`; a POST resets the counts.

The layer is an ASGI middleware around fakesnow's own Starlette app, so there
is a single uvicorn listener and no second hop. Credentials are ignored
(password and key-pair/JWT logins both succeed). One in-memory database is
shared by all sessions; nothing survives a restart.

Usage: snowflake_server.py [--port P] [--host H] [--exit-on-stdin-close]
                           [--handoff-after-ms N] [--chunk-rows N]
P=0 (default) picks a free port. Prints exactly one line `READY <port>` on
stdout once the server answers HTTP; all logging goes to stderr. Exits 0 on
SIGTERM/SIGINT, and (with --exit-on-stdin-close) when stdin reaches EOF, so a
parent that dies without cleaning up does not leave the server running.

Assumes: Python 3.11 with fakesnow[server]==0.12.1, pyarrow, uvicorn, starlette.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import http.client
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

LOGIN_PATH = "/session/v1/login-request"
QUERY_PATH = "/queries/v1/query-request"
TOKEN_PATH = "/session/token-request"
ABORT_PATH = "/queries/v1/abort-request"
RESULT_PATH = re.compile(r"^/queries/([^/]+)/result$")
HANDOFF_PATH = "/__test/handoff"
CHUNKS_PATH = "/__test/chunks"
CHUNK_PATH = re.compile(r"^/__chunks/([0-9a-f]+)/([0-9]+)$")
CHUNK_KEY_HEADER = "x-amz-server-side-encryption-customer-key"
# Results whose chunks are kept for download (older ones are forgotten).
KEPT_RESULTS = 64

# Column types snowflake-api 0.14 can deserialize in `rowtype[].type`.
KNOWN_SF_TYPES = {
    "fixed",
    "real",
    "text",
    "date",
    "variant",
    "timestamp_ltz",
    "timestamp_ntz",
    "timestamp_tz",
    "object",
    "binary",
    "time",
    "boolean",
    "array",
}

log = logging.getLogger("snowflake_server")
_session_ids = itertools.count(1)


def fix_arrow_rowset(b64: str) -> str:
    """Mark timestamp structs null where their `epoch` child is null.

    fakesnow builds TIMESTAMP_* columns as Struct{epoch, fraction[, timezone]}
    without a validity buffer; arrow-rs refuses a non-nullable child holding
    nulls under a valid parent. Returns the input unchanged when nothing needs
    fixing.
    """
    if not b64:
        return b64
    import pyarrow as pa
    import pyarrow.compute as pc

    reader = pa.ipc.open_stream(base64.b64decode(b64))
    schema = reader.schema
    batches = list(reader)
    changed = False
    fixed_batches = []
    for batch in batches:
        columns = []
        for i, field in enumerate(schema):
            col = batch.column(i)
            if pa.types.is_struct(field.type) and field.type.get_field_index("epoch") >= 0:
                epoch = col.field("epoch")
                if epoch.null_count > 0:
                    # struct null wherever it already was null or epoch is null
                    mask = epoch.is_null()
                    if col.null_count > 0:
                        mask = pc.or_(mask, col.is_null())
                    children = [col.field(j) for j in range(field.type.num_fields)]
                    col = pa.StructArray.from_arrays(
                        children, fields=list(field.type), mask=mask
                    )
                    changed = True
            columns.append(col)
        fixed_batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
    if not changed:
        return b64
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in fixed_batches:
            writer.write_batch(batch)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")


def error_data(obj: dict[str, Any], status: int) -> dict[str, Any]:
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    code = data.get("errorCode") or obj.get("code") or "000000"
    data.setdefault("errorCode", str(code))
    if data.get("sqlState") is None:
        data["sqlState"] = ""
    data.setdefault("age", 0)
    data.setdefault("internalError", status >= 500)
    if data.get("queryId") is None:
        data["queryId"] = ""
    obj["code"] = str(obj.get("code") or code)
    if obj.get("message") is None:
        obj["message"] = ""
    return data


def patch_login(obj: dict[str, Any], query: dict[str, list[str]], args: argparse.Namespace) -> None:
    data = obj.get("data")
    if not obj.get("success") or not isinstance(data, dict):
        return
    data.setdefault("sessionId", next(_session_ids))
    data.setdefault("masterToken", "master-" + str(data.get("token", "")))
    data.setdefault("validityInSeconds", args.session_validity)
    data.setdefault("masterValidityInSeconds", args.master_validity)
    data.setdefault("parameters", [])
    info = data.setdefault("sessionInfo", {})
    info.setdefault("roleName", (query.get("roleName") or ["SYSADMIN"])[0])
    info.setdefault("warehouseName", (query.get("warehouse") or ["FAKESNOW_WH"])[0])


def patch_query(obj: dict[str, Any], status: int, query_id: str | None = None) -> None:
    if not obj.get("success"):
        obj["data"] = error_data(obj, status)
        if query_id:
            obj["data"]["queryId"] = query_id
        return
    data = obj.get("data")
    if not isinstance(data, dict) or "stageInfo" in data:
        return  # PUT/GET replies have their own shape
    if query_id:
        data["queryId"] = query_id
    total = data.get("total") or 0
    data.setdefault("returned", total)
    data.setdefault("finalRoleName", "SYSADMIN")
    data.setdefault("finalWarehouseName", "FAKESNOW_WH")
    data.setdefault("version", 1)
    if data.get("parameters") is None:
        data["parameters"] = []
    for col in data.get("rowtype") or []:
        if col.get("nullable") is None:
            col["nullable"] = True
        if col.get("type") not in KNOWN_SF_TYPES:
            col["type"] = "text"
    if data.get("queryResultFormat") == "arrow" and data.get("rowsetBase64"):
        data["rowsetBase64"] = fix_arrow_rowset(data["rowsetBase64"])


@dataclass
class Handoff:
    """A statement answered with its handle; its real result comes from `task`."""

    query_id: str
    auth: bytes
    request_id: str
    sql_text: str
    started: float
    after: float
    task: asyncio.Task
    cancelled: bool = False


@dataclass
class ChunkLog:
    results_chunked: int = 0
    chunks_listed: int = 0
    chunks_served: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    refused: int = 0
    failed: int = 0


def split_rowset(b64: str, first: int, size: int) -> tuple[str, list[tuple[int, bytes]]] | None:
    """An Arrow rowset cut as Snowflake sends a large result: the first `first`
    rows inline (base64 Arrow IPC stream), the rest as chunks of `size` rows,
    each a gzip'd Arrow IPC stream. None when it has no more than `first` rows."""
    import pyarrow as pa

    table = pa.ipc.open_stream(base64.b64decode(b64)).read_all()
    if table.num_rows <= first:
        return None

    def stream(part: Any) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in part.to_batches():
                writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    inline = base64.b64encode(stream(table.slice(0, first))).decode("ascii")
    chunks = []
    for offset in range(first, table.num_rows, size):
        part = table.slice(offset, size)
        chunks.append((part.num_rows, gzip.compress(stream(part), compresslevel=1)))
    return inline, chunks


@dataclass
class HandoffLog:
    handed_off: int = 0
    polls: int = 0
    aborts: list[dict[str, Any]] = field(default_factory=list)


async def read_body(receive: Any) -> bytes:
    raw = bytearray()
    while True:
        message = await receive()
        raw.extend(message.get("body", b""))
        if not message.get("more_body", False):
            return bytes(raw)


async def send_json(send: Any, obj: Any, status: int = 200) -> None:
    payload = json.dumps(obj, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def handoff_reply(h: Handoff, code: str) -> dict[str, Any]:
    message = (
        "Asynchronous execution in progress. Use provided query id to perform query monitoring and management."
        if code == "333334"
        else "Query execution in progress."
    )
    return {
        "code": code,
        "message": message,
        "success": True,
        "data": {
            "queryId": h.query_id,
            "getResultUrl": f"/queries/{h.query_id}/result",
            "queryAbortsAfterSecs": 300,
            "progressDesc": None,
        },
    }


def error_reply(code: str, message: str, query_id: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {"code": code, "message": message, "success": False, "data": {"queryId": query_id}}
    obj["data"] = error_data(obj, 200)
    return obj


class CompatApp:
    """ASGI middleware: buffers fakesnow's JSON replies and patches them."""

    def __init__(self, app: Any, args: argparse.Namespace) -> None:
        self.app = app
        self.args = args
        self.session_locks: dict[bytes, asyncio.Lock] = {}
        # --handoff-after-ms, in seconds; None: statements answer as they finish.
        self.handoff_after: float | None = None if args.handoff_after_ms is None else args.handoff_after_ms / 1000
        self.handoffs: dict[str, Handoff] = {}
        self.handoff_log = HandoffLog()
        # --chunk-rows: results larger than this many rows come in chunks of that size.
        self.chunk_rows: int | None = args.chunk_rows
        self.chunk_delay: float = 0.0
        # Every chunk GET answers 503 (storage down).
        self.chunks_fail = False
        # result id -> (key the chunk GETs must carry, gzip'd chunks)
        self.chunks: dict[str, tuple[str, list[bytes]]] = {}
        self.chunk_log = ChunkLog()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # snowflake-api asks for "//session/token-request" (its path has a leading slash)
        path = re.sub("/+", "/", scope.get("path", ""))
        method = scope.get("method")
        if path == TOKEN_PATH and method == "POST":
            await self.renew(receive, send)
            return
        if path == HANDOFF_PATH:
            await self.handoff_control(scope, send)
            return
        if path == CHUNKS_PATH:
            await self.chunks_control(scope, send)
            return
        if (m := CHUNK_PATH.match(path)) and method == "GET":
            await self.chunk(m.group(1), int(m.group(2)), scope, send)
            return
        if path == ABORT_PATH and method == "POST":
            await self.abort(scope, receive, send)
            return
        if (m := RESULT_PATH.match(path)) and method == "GET":
            await self.result(m.group(1), scope, send)
            return
        if path not in (LOGIN_PATH, QUERY_PATH):
            await self.app(scope, receive, send)
            return

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path == QUERY_PATH and self.handoff_after is not None:
            await self.hand_off(scope, receive, send, query)
            return
        status, headers, body = await self.captured(path, query, scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def captured(
        self, path: str, query: dict, scope: dict, receive: Any, query_id: str | None = None
    ) -> tuple[int, list, bytes]:
        """Runs fakesnow on one request; returns its patched reply."""
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        if path == QUERY_PATH:
            # fakesnow gives each session one DuckDB cursor, which refuses a second
            # statement while one runs ("connection is busy"); Snowflake runs them
            # concurrently, so queue statements of one session instead.
            auth = dict(scope.get("headers") or []).get(b"authorization", b"")
            lock = self.session_locks.setdefault(auth, asyncio.Lock())
            async with lock:
                await self.app(scope, receive, capture)
        else:
            await self.app(scope, receive, capture)
        host = dict(scope.get("headers") or []).get(b"host", b"127.0.0.1").decode("latin-1")
        return self.patched(path, query, start, bytes(body), query_id, host)

    async def hand_off(self, scope: dict, receive: Any, send: Any, query: dict) -> None:
        """Answers a query-request with its handle; runs it in the background."""
        raw = await read_body(receive)
        try:
            req = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
            sql_text = str(req.get("sqlText", ""))
        except Exception:  # noqa: BLE001
            sql_text = ""
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:  # fakesnow never reads twice; a disconnect is never reported
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        query_id = "01" + uuid.uuid4().hex[:16]
        h = Handoff(
            query_id=query_id,
            auth=dict(scope.get("headers") or []).get(b"authorization", b""),
            request_id=(query.get("requestId") or [""])[0],
            sql_text=sql_text,
            started=time.monotonic(),
            after=self.handoff_after or 0.0,
            task=asyncio.create_task(self.captured(QUERY_PATH, query, scope, replay, query_id)),
        )
        self.handoffs[query_id] = h
        self.handoff_log.handed_off += 1
        await send_json(send, handoff_reply(h, "333334"))

    async def result(self, query_id: str, scope: dict, send: Any) -> None:
        """GET of a handed-off statement's result URL."""
        self.handoff_log.polls += 1
        h = self.handoffs.get(query_id)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        if h is None:
            await send_json(send, error_reply("000709", f"Statement {query_id} not found", query_id))
            return
        if auth != h.auth:
            await send_json(send, error_reply("390104", "User must login again to access the service."), 401)
            return
        if h.cancelled:
            del self.handoffs[query_id]
            await send_json(send, error_reply("000604", "SQL execution canceled", query_id))
            return
        if not h.task.done() or time.monotonic() - h.started < h.after:
            await send_json(send, handoff_reply(h, "333333"))
            return
        del self.handoffs[query_id]
        try:
            status, headers, body = h.task.result()
        except Exception as e:  # noqa: BLE001
            log.exception("handed-off statement %s failed", query_id)
            await send_json(send, error_reply("261000", f"statement failed in the test server: {e}", query_id), 500)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def abort(self, scope: dict, receive: Any, send: Any) -> None:
        """POST /queries/v1/abort-request: cancels a handed-off statement, and records the call."""
        raw = await read_body(receive)
        try:
            req = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        except Exception:  # noqa: BLE001
            req = {}
        request_id = str(req.get("requestId", ""))
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        h = next(
            (h for h in self.handoffs.values() if h.request_id == request_id and h.auth == auth and request_id),
            None,
        )
        cancelled = h is not None and not h.cancelled
        if h is not None:
            h.cancelled = True
        self.handoff_log.aborts.append(
            {
                "queryId": h.query_id if h else None,
                "requestId": request_id,
                "sqlText": req.get("sqlText"),
                "cancelled": cancelled,
            }
        )
        log.info(
            "abort-request for request %s: %s",
            request_id,
            f"query {h.query_id} cancelled" if cancelled else "no running statement matched",
        )
        if cancelled:
            await send_json(send, {"data": None, "code": None, "message": None, "success": True})
        else:
            await send_json(send, error_reply("000605", "Identified SQL statement is not currently executing."))

    async def handoff_control(self, scope: dict, send: Any) -> None:
        if scope.get("method") == "POST":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            value = (query.get("after_ms") or ["off"])[0]
            self.handoff_after = None if value == "off" else int(value) / 1000
        log_ = self.handoff_log
        await send_json(
            send,
            {
                "after_ms": None if self.handoff_after is None else round(self.handoff_after * 1000),
                "handed_off": log_.handed_off,
                "polls": log_.polls,
                "aborts": log_.aborts,
            },
        )

    def chunk_result(self, obj: dict[str, Any], host: str) -> None:
        """With chunking on, moves the rows of a large Arrow result past the first
        `chunk_rows` into chunks served by this server (`/__chunks/{id}/{i}`),
        listed in `data.chunks` with the key to send in `data.chunkHeaders`."""
        data = obj.get("data")
        if not self.chunk_rows or not obj.get("success") or not isinstance(data, dict):
            return
        if data.get("queryResultFormat") != "arrow" or not data.get("rowsetBase64"):
            return
        split = split_rowset(data["rowsetBase64"], self.chunk_rows, self.chunk_rows)
        if split is None:
            return
        inline, chunks = split
        result_id = uuid.uuid4().hex
        key = base64.b64encode(os.urandom(32)).decode("ascii")
        self.chunks[result_id] = (key, [c for _, c in chunks])
        while len(self.chunks) > KEPT_RESULTS:
            del self.chunks[next(iter(self.chunks))]
        self.chunk_log.results_chunked += 1
        self.chunk_log.chunks_listed += len(chunks)
        data["rowsetBase64"] = inline
        data["chunks"] = [
            {"url": f"http://{host}/__chunks/{result_id}/{i}", "rowCount": rows, "uncompressedSize": len(c)}
            for i, (rows, c) in enumerate(chunks)
        ]
        data["chunkHeaders"] = {CHUNK_KEY_HEADER: key, "x-amz-server-side-encryption-customer-algorithm": "AES256"}
        data["qrmk"] = key

    async def chunk(self, result_id: str, index: int, scope: dict, send: Any) -> None:
        """GET of a result chunk: the gzip'd Arrow IPC stream, for the key handed out."""
        log_ = self.chunk_log
        log_.in_flight += 1
        log_.max_in_flight = max(log_.max_in_flight, log_.in_flight)
        try:
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            headers = dict(scope.get("headers") or [])
            entry = self.chunks.get(result_id)
            if self.chunks_fail:
                log_.failed += 1
                status, body, extra = 503, b"storage unavailable (test switch)", []
            elif entry is None or index >= len(entry[1]):
                status, body, extra = 404, b"no such chunk", []
            elif headers.get(CHUNK_KEY_HEADER.encode(), b"").decode("latin-1") != entry[0] or headers.get(
                b"authorization"
            ):
                # Pre-signed storage wants the chunk headers, and never sees the session token.
                log_.refused += 1
                status, body, extra = 403, b"chunk headers missing or wrong, or a session token sent", []
            else:
                log_.chunks_served += 1
                status, body, extra = 200, entry[1][index], [(b"content-encoding", b"gzip")]
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        finally:
            log_.in_flight -= 1

    async def chunks_control(self, scope: dict, send: Any) -> None:
        """`POST /__test/chunks?rows=N|off[&delay_ms=D][&fail=1]` switches chunking
        (delays every chunk GET by D ms; with fail=1 answers every chunk GET 503);
        `GET` reports what was chunked and served."""
        if scope.get("method") == "POST":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            value = (query.get("rows") or ["off"])[0]
            self.chunk_rows = None if value == "off" else int(value)
            self.chunk_delay = int((query.get("delay_ms") or ["0"])[0]) / 1000
            self.chunks_fail = (query.get("fail") or ["0"])[0] == "1"
            self.chunk_log = ChunkLog()
        log_ = self.chunk_log
        await send_json(
            send,
            {
                "rows": self.chunk_rows,
                "delay_ms": round(self.chunk_delay * 1000),
                "results_chunked": log_.results_chunked,
                "chunks_listed": log_.chunks_listed,
                "chunks_served": log_.chunks_served,
                "max_in_flight": log_.max_in_flight,
                "refused": log_.refused,
                "failed": log_.failed,
            },
        )

    def patched(
        self, path: str, query: dict, start: dict, body: bytes, query_id: str | None = None, host: str = ""
    ) -> tuple[int, list, bytes]:
        status = start.get("status", 200)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        gzipped = any(k.lower() == b"content-encoding" and v.lower() == b"gzip" for k, v in headers)
        try:
            raw = gzip.decompress(body) if gzipped else body
            obj = json.loads(raw)
            if isinstance(obj, dict):
                if path == LOGIN_PATH:
                    patch_login(obj, query, self.args)
                else:
                    patch_query(obj, status, query_id)
                    self.chunk_result(obj, host)
                raw = json.dumps(obj, separators=(",", ":")).encode()
                body = gzip.compress(raw) if gzipped else raw
        except Exception:  # leave an unparseable reply as it was
            log.exception("could not patch reply for %s", path)
        headers.append((b"content-length", str(len(body)).encode()))
        return status, headers, body

    async def renew(self, receive: Any, send: Any) -> None:
        raw = bytearray()
        while True:
            message = await receive()
            raw.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            req = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
            token = req["oldSessionToken"]
            reply = {
                "data": {
                    "sessionToken": token,
                    "validityInSecondsST": self.args.session_validity,
                    "masterToken": "master-" + token,
                    "validityInSecondsMT": self.args.master_validity,
                    "sessionId": next(_session_ids),
                },
                "code": None,
                "message": None,
                "success": True,
            }
        except Exception as e:  # noqa: BLE001
            reply = {"data": None, "code": "390100", "message": f"bad renew request: {e}", "success": False}
        payload = json.dumps(reply).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})


def wait_answering(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--exit-on-stdin-close", action="store_true", help="exit when stdin reaches EOF")
    parser.add_argument("--session-validity", type=int, default=4 * 3600, help="validityInSeconds in login replies")
    parser.add_argument("--master-validity", type=int, default=24 * 3600, help="masterValidityInSeconds")
    parser.add_argument("--verbose", action="store_true", help="log every session and failed statement")
    env_handoff = os.environ.get("SNOWFLAKE_SERVER_HANDOFF_AFTER_MS")
    parser.add_argument(
        "--handoff-after-ms",
        type=int,
        default=int(env_handoff) if env_handoff else None,
        metavar="N",
        help="answer every query-request with its handle (333334) and its result URL with 333333 "
        "until the statement has run N ms (env SNOWFLAKE_SERVER_HANDOFF_AFTER_MS)",
    )
    env_chunks = os.environ.get("SNOWFLAKE_SERVER_CHUNK_ROWS")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=int(env_chunks) if env_chunks else None,
        metavar="N",
        help="answer an Arrow result of more than N rows as Snowflake answers a large one: N rows "
        "inline, the rest in gzip'd Arrow IPC chunks of N rows served by this server "
        "(env SNOWFLAKE_SERVER_CHUNK_ROWS; default: everything inline)",
    )
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn
    import fakesnow.server

    logging.getLogger("fakesnow.server").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.INFO if args.verbose else logging.WARNING)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(512)
    port = sock.getsockname()[1]

    config = uvicorn.Config(
        CompatApp(fakesnow.server.app, args),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    thread.start()
    deadline = time.monotonic() + 60
    while thread.is_alive() and not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started or not wait_answering(port, deadline):
        log.error("server did not start")
        return 1

    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()

    if args.exit_on_stdin_close:

        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read1(65536):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    while not stop.wait(0.5):
        if not thread.is_alive():
            log.error("uvicorn thread died")
            return 1
    server.should_exit = True
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
