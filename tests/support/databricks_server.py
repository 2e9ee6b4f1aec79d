#!/usr/bin/env python3
"""A Databricks SQL Statement Execution API 2.0 stand-in for materializer's tests.

Provides, on 127.0.0.1:PORT, the REST surfaces the daemon (and the vendor's
`databricks-sdk` `statement_execution` client) use, with the documented
shapes, hand-offs and errors; DuckDB (in memory, one database for every
client) runs the SQL after a small Databricks-to-DuckDB translation:

  POST /api/2.0/sql/statements              execute: {statement, warehouse_id,
        catalog?, schema?, wait_timeout? ("0s" or "5s".."50s", default "10s"),
        on_wait_timeout? (CONTINUE|CANCEL), disposition?, format?, ...}
  GET  /api/2.0/sql/statements/{id}         poll: the same StatementResponse
  GET  /api/2.0/sql/statements/{id}/result/chunks/{i}   ResultData of chunk i
  POST /api/2.0/sql/statements/{id}/cancel  {} (recorded; the statement ends CANCELED)
  POST /oidc/v1/token                       OAuth M2M (client_credentials, HTTP
        Basic or form client_id/client_secret) -> {access_token, token_type,
        expires_in, scope}
  GET  /.well-known/databricks-config       host metadata (oidc_endpoint, workspace_id)
  GET  /oidc/.well-known/oauth-authorization-server   OIDC discovery
  GET  /__links/{id}/{i}?sig=...            the "pre-signed" external link of a
        chunk: an Arrow IPC stream; refused (400) when it carries an
        Authorization header, as cloud storage refuses a second auth mechanism.

A StatementResponse is {statement_id, status: {state, error?, sql_state?},
manifest?, result?}; state PENDING (queued), RUNNING, SUCCEEDED, FAILED,
CANCELED, CLOSED. The POST waits wait_timeout for the statement; a statement
still running then answers with its state (CONTINUE) or is cancelled (CANCEL).
A SUCCEEDED response with EXTERNAL_LINKS carries the manifest (schema columns
with type_name/type_text/position, total_chunk_count, chunks[], total_row_count)
and the first chunk's link in result.external_links; every link has
chunk_index, row_offset, row_count, byte_count, external_link, expiration and,
but for the last, next_chunk_index and next_chunk_internal_link. Rows are cut
into chunks of --chunk-rows rows (the real service cuts by bytes). Errors of a
statement are 200 with state FAILED and status.error {error_code, message};
errors of a request are HTTP 4xx/5xx with {"error_code", "message"}.

Test switches (not part of the API):
  POST /__test/config?chunk_rows=N&statement_delay_ms=D&link_delay_ms=L&link_fail=0|1&oauth_expires_in=S
       D: every statement runs D ms longer before its SQL (cancellable while it
       waits); L: every link GET waits L ms; link_fail=1: link GETs answer 503.
       Resets the counters.
  GET  /__test/log   {statements, polls, chunk_requests, links_served,
       max_links_in_flight, links_refused, links_failed, tokens_issued,
       cancels: [{statement_id, state_before, statement}], sql: [...]}

Credentials: Bearer --token (default `dapi-test-token`) or a token issued by
/oidc/v1/token for --client-id/--client-secret (default `test-client` /
`test-secret`); anything else is 401 (no header) or 403 (wrong token).
`--warehouse-id` (default `test-warehouse`) is the only warehouse.

Usage: databricks_server.py [--port P] [--exit-on-stdin-close] [--chunk-rows N] ...
P=0 picks a free port; prints `READY <port>` once listening. Assumes Python
3.11 with duckdb and pyarrow (requirements-databricks.txt).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import logging
import re
import secrets
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa
import pyarrow.ipc as ipc

log = logging.getLogger("databricks_server")

STATEMENTS = "/api/2.0/sql/statements"
RE_STATEMENT = re.compile(r"^/api/2\.0/sql/statements/([^/]+)$")
RE_CHUNK = re.compile(r"^/api/2\.0/sql/statements/([^/]+)/result/chunks/(-?[0-9]+)$")
RE_CANCEL = re.compile(r"^/api/2\.0/sql/statements/([^/]+)/cancel$")
RE_LINK = re.compile(r"^/__links/([^/]+)/([0-9]+)$")
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}


# --- SQL: Databricks -> DuckDB ----------------------------------------------

# Databricks' TIMESTAMP is an instant (TIMESTAMP_LTZ), DuckDB's a wall time.
WORDS = {
    "TIMESTAMP_NTZ": "TIMESTAMP",
    "TIMESTAMP_LTZ": "TIMESTAMPTZ",
    "TIMESTAMP": "TIMESTAMPTZ",
    "STRING": "VARCHAR",
    "LONG": "BIGINT",
    "SHORT": "SMALLINT",
    "BYTE": "TINYINT",
    "CURRENT_CATALOG": "current_database",
}


def translate(sql: str) -> str:
    """Backtick identifiers become double-quoted; outside literals and
    identifiers the type words above and ARRAY<T> (T[]) are DuckDB's."""
    out = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    break
                j += 1
            # Databricks escapes quotes with a backslash, DuckDB doubles them.
            body = sql[i + 1 : j].replace("\\'", "''").replace("\\\\", "\\")
            out.append("'" + body + "'")
            i = j + 1
        elif c == "`":
            j = sql.index("`", i + 1)
            while j + 1 < n and sql[j + 1] == "`":
                j = sql.index("`", j + 2)
            name = sql[i + 1 : j].replace("``", "`")
            out.append('"' + name.replace('"', '""') + '"')
            i = j + 1
        else:
            j = i
            while j < n and sql[j] not in "'`":
                j += 1
            out.append(translate_words(sql[i:j]))
            i = j
    return "".join(out)


def translate_words(text: str) -> str:
    text = re.sub(
        r"\b([A-Za-z_][A-Za-z0-9_]*)\b",
        lambda m: WORDS.get(m.group(1).upper(), m.group(1)),
        text,
    )
    # ARRAY(a, b) builds a list; ARRAY<T> is the type T[] (innermost first).
    text = re.sub(r"\bARRAY\s*\(", "list_value(", text, flags=re.IGNORECASE)
    text = re.sub(r"\bCURRENT_TIMESTAMP\s*\(\s*\)", "get_current_timestamp()", text, flags=re.IGNORECASE)
    pattern = re.compile(r"\bARRAY\s*<\s*([^<>]+?)\s*>", re.IGNORECASE)
    while pattern.search(text):
        text = pattern.sub(lambda m: m.group(1) + "[]", text)
    return text


def databricks_type(duck: str) -> tuple[str, str, int | None, int | None]:
    """(type_name, type_text, precision, scale) of a DuckDB type as Databricks names it."""
    t = duck.strip().upper()
    if t.endswith("[]"):
        inner = databricks_type(t[:-2])
        return "ARRAY", f"ARRAY<{inner[1]}>", None, None
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        return "DECIMAL", f"DECIMAL({p},{s})", p, s
    simple = {
        "BIGINT": ("LONG", "BIGINT"),
        "INTEGER": ("INT", "INT"),
        "SMALLINT": ("SHORT", "SMALLINT"),
        "TINYINT": ("BYTE", "TINYINT"),
        "HUGEINT": ("DECIMAL", "DECIMAL(38,0)"),
        "DOUBLE": ("DOUBLE", "DOUBLE"),
        "FLOAT": ("FLOAT", "FLOAT"),
        "BOOLEAN": ("BOOLEAN", "BOOLEAN"),
        "VARCHAR": ("STRING", "STRING"),
        "BLOB": ("BINARY", "BINARY"),
        "DATE": ("DATE", "DATE"),
        "TIMESTAMP WITH TIME ZONE": ("TIMESTAMP", "TIMESTAMP"),
        "TIMESTAMP": ("TIMESTAMP_NTZ", "TIMESTAMP_NTZ"),
        '"NULL"': ("NULL", "VOID"),
        "NULL": ("NULL", "VOID"),
    }
    if t in simple:
        name, text = simple[t]
        if name == "DECIMAL":
            return name, text, 38, 0
        return name, text, None, None
    return "USER_DEFINED_TYPE", t, None, None


def arrow_type(duck: str) -> pa.DataType:
    """The Arrow type Databricks sends for a column of this (DuckDB) type."""
    t = duck.strip().upper()
    if t.endswith("[]"):
        return pa.list_(arrow_type(t[:-2]))
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return {
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "SMALLINT": pa.int16(),
        "TINYINT": pa.int8(),
        "HUGEINT": pa.decimal128(38, 0),
        "DOUBLE": pa.float64(),
        "FLOAT": pa.float32(),
        "BOOLEAN": pa.bool_(),
        "VARCHAR": pa.string(),
        "BLOB": pa.binary(),
        "DATE": pa.date32(),
        "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="Etc/UTC"),
        "TIMESTAMP": pa.timestamp("us"),
    }.get(t, pa.string())


class SqlError(Exception):
    def __init__(self, error_code: str, message: str, sql_state: str):
        super().__init__(message)
        self.error_code, self.message, self.sql_state = error_code, message, sql_state


def sql_error(e: Exception) -> SqlError:
    """A DuckDB error as Databricks words it (error class and SQLSTATE)."""
    text = str(e).replace("\n", " ")
    if isinstance(e, duckdb.CatalogException):
        m = re.search(r"(Table|Catalog|Schema) with name (\S+) does not exist", text)
        if m and m.group(1) == "Table":
            return SqlError(
                "BAD_REQUEST",
                f"[TABLE_OR_VIEW_NOT_FOUND] The table or view `{m.group(2)}` cannot be found. "
                "Verify the spelling and correctness of the schema and catalog. SQLSTATE: 42P01",
                "42P01",
            )
        if "Function with name" in text:
            return SqlError("BAD_REQUEST", f"[UNRESOLVED_ROUTINE] {text} SQLSTATE: 42883", "42883")
        if m:
            kind = "SCHEMA_NOT_FOUND" if m.group(1) == "Schema" else "NO_SUCH_CATALOG_EXCEPTION"
            return SqlError("BAD_REQUEST", f"[{kind}] {text} SQLSTATE: 42704", "42704")
        return SqlError("BAD_REQUEST", f"[TABLE_OR_VIEW_NOT_FOUND] {text} SQLSTATE: 42P01", "42P01")
    if isinstance(e, duckdb.BinderException):
        m = re.search(r'Referenced column "([^"]+)" not found', text)
        name = m.group(1) if m else "?"
        return SqlError(
            "BAD_REQUEST",
            f"[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column, variable, or function parameter "
            f"with name `{name}` cannot be resolved. SQLSTATE: 42703",
            "42703",
        )
    if isinstance(e, duckdb.ParserException):
        return SqlError("BAD_REQUEST", f"[PARSE_SYNTAX_ERROR] {text} SQLSTATE: 42601", "42601")
    if isinstance(e, (duckdb.ConversionException, duckdb.InvalidInputException)):
        return SqlError("BAD_REQUEST", f"[CAST_INVALID_INPUT] {text} SQLSTATE: 22018", "22018")
    return SqlError("BAD_REQUEST", f"[INTERNAL_ERROR] {text} SQLSTATE: XX000", "XX000")


# --- the engine --------------------------------------------------------------


class Engine:
    def __init__(self) -> None:
        self.db = duckdb.connect(":memory:")
        self.db.execute("SET TimeZone = 'UTC'")
        self.lock = threading.Lock()
        self.ddl = threading.Lock()
        self.db.execute("ATTACH ':memory:' AS main_catalog")
        self._catalogs = {"main"}
        self.db.execute("CREATE SCHEMA IF NOT EXISTS main_catalog.\"default\"")

    def catalog(self, name: str) -> str:
        """The DuckDB database of a Databricks catalog (`main` is `main_catalog`)."""
        return "main_catalog" if name.lower() == "main" else name

    def run(self, sql: str, catalog: str | None, schema: str | None) -> pa.Table:
        text = sql.strip().rstrip(";").strip()
        m = re.fullmatch(r"CREATE\s+CATALOG\s+(IF\s+NOT\s+EXISTS\s+)?`?([A-Za-z0-9_]+)`?", text, re.I)
        if m:
            with self.ddl:
                name = m.group(2)
                exists = name.lower() in {c.lower() for c in self._catalogs}
                if exists and not m.group(1):
                    raise SqlError("BAD_REQUEST", f"[CATALOG_ALREADY_EXISTS] Catalog `{name}` already exists. SQLSTATE: 42P04", "42P04")
                if not exists:
                    self.db.execute(f"ATTACH ':memory:' AS \"{name}\"")
                    self._catalogs.add(name)
            return pa.table({})
        m = re.fullmatch(r"DROP\s+CATALOG\s+(IF\s+EXISTS\s+)?`?([A-Za-z0-9_]+)`?(\s+CASCADE)?", text, re.I)
        if m:
            with self.ddl:
                name = m.group(2)
                if name.lower() in {c.lower() for c in self._catalogs}:
                    self.db.execute(f"DETACH \"{name}\"")
                    self._catalogs = {c for c in self._catalogs if c.lower() != name.lower()}
            return pa.table({})
        cur = self.db.cursor()
        try:
            cur.execute("SET TimeZone = 'UTC'")
            if catalog:
                if catalog.lower() != "main" and catalog.lower() not in {c.lower() for c in self._catalogs}:
                    raise SqlError("BAD_REQUEST", f"[NO_SUCH_CATALOG_EXCEPTION] Catalog '{catalog}' was not found. SQLSTATE: 42704", "42704")
                target = f'"{self.catalog(catalog)}"'
                if schema:
                    target += '."' + schema.replace('"', '""') + '"'
                try:
                    cur.execute(f"USE {target}")
                except duckdb.Error:
                    raise SqlError("BAD_REQUEST", f"[SCHEMA_NOT_FOUND] The schema `{catalog}`.`{schema}` cannot be found. SQLSTATE: 42704", "42704") from None
            else:
                cur.execute('USE main_catalog."default"')
            m = re.fullmatch(r"DESC(?:RIBE)?\s+(?:TABLE\s+)?(?:EXTENDED\s+)?(.+)", text, re.I | re.S)
            if m:
                return self.describe(cur, m.group(1))
            duck = translate(text)
            duck = re.sub(r'(^|[\s(,])"main"\.', r'\1"main_catalog".', duck, flags=re.I)
            duck = re.sub(r"(^|[\s(,])main\.", r"\1main_catalog.", duck, flags=re.I)
            cur.execute(duck)
            if cur.description is None or re.match(r"\s*(CREATE|DROP|ALTER|USE)\b", text, re.I):
                # DDL answers with an empty result, no columns.
                return pa.table({})
            types = [str(d[1]) for d in cur.description]
            table = cur.to_arrow_table()
            if re.match(r"\s*INSERT\b", text, re.I):
                n = table.column(0)[0].as_py() if table.num_rows else 0
                counts = pa.table({"num_affected_rows": pa.array([n], pa.int64()), "num_inserted_rows": pa.array([n], pa.int64())})
                return conform(counts, ["BIGINT", "BIGINT"])
            return conform(table, types)
        except SqlError:
            raise
        except duckdb.Error as e:
            raise sql_error(e) from None
        finally:
            cur.close()

    def describe(self, cur, name: str) -> pa.Table:
        duck = translate(name.strip())
        duck = re.sub(r'^"main"\.', '"main_catalog".', duck, flags=re.I)
        duck = re.sub(r"^main\.", "main_catalog.", duck, flags=re.I)
        try:
            rows = cur.execute(f"DESCRIBE {duck}").fetchall()
        except duckdb.Error as e:
            raise sql_error(e) from None
        names = [r[0] for r in rows]
        types = [databricks_type(r[1])[1].lower() for r in rows]
        return pa.table(
            {
                "col_name": pa.array(names, pa.string()),
                "data_type": pa.array(types, pa.string()),
                "comment": pa.array([None] * len(rows), pa.string()),
            }
        )


def conform(table: pa.Table, duck_types: list[str]) -> pa.Table:
    """The table with the Arrow types Databricks sends, and its manifest types."""
    fields = [pa.field(f.name, arrow_type(t), nullable=True) for f, t in zip(table.schema, duck_types)]
    schema = pa.schema(fields)
    for f, t in zip(schema, duck_types):
        f_meta = databricks_type(t)
        schema = schema.set(schema.get_field_index(f.name), f.with_metadata({"type_name": f_meta[0], "type_text": f_meta[1]}))
    arrays = [table.column(i).cast(schema.field(i).type) for i in range(table.num_columns)]
    return pa.Table.from_arrays(arrays, schema=schema)


def ipc_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    plain = table.schema.remove_metadata()
    plain = pa.schema([f.remove_metadata() for f in plain])
    with ipc.new_stream(sink, plain) as w:
        for batch in table.cast(plain).to_batches():
            w.write_batch(batch)
    return sink.getvalue()


# --- statements ----------------------------------------------------------------


class Statement:
    def __init__(self, sql: str, catalog, schema, disposition: str, fmt: str):
        self.id = str(uuid.uuid4()).replace("-", "")[:8] + "-" + str(uuid.uuid4())[9:]
        self.sql, self.catalog, self.schema = sql, catalog, schema
        self.disposition, self.format = disposition, fmt
        self.state = "PENDING"
        self.error: SqlError | None = None
        self.table: pa.Table | None = None
        self.chunks: list[tuple[int, int, bytes]] = []  # (row_offset, row_count, ipc)
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.signature = secrets.token_hex(16)


class State:
    def __init__(self, args) -> None:
        self.args = args
        self.engine = Engine()
        self.lock = threading.Lock()
        self.statements: dict[str, Statement] = {}
        self.tokens: dict[str, float] = {}
        self.chunk_rows = args.chunk_rows
        self.statement_delay_ms = 0
        self.link_delay_ms = 0
        self.link_fail = False
        self.oauth_expires_in = 3600
        self.reset()

    def reset(self) -> None:
        self.counts = {
            "statements": 0,
            "polls": 0,
            "chunk_requests": 0,
            "links_served": 0,
            "max_links_in_flight": 0,
            "links_refused": 0,
            "links_failed": 0,
            "tokens_issued": 0,
        }
        self.cancels: list[dict] = []
        self.sql: list[str] = []
        self.links_in_flight = 0

    def count(self, key: str, by: int = 1) -> None:
        with self.lock:
            self.counts[key] += by


STATE: State


def run_statement(st: Statement) -> None:
    if STATE.statement_delay_ms:
        if st.cancelled.wait(STATE.statement_delay_ms / 1000):
            return
    with STATE.lock:
        if st.state == "CANCELED":
            return
        st.state = "RUNNING"
    try:
        table = STATE.engine.run(st.sql, st.catalog, st.schema)
    except SqlError as e:
        with STATE.lock:
            if st.state != "CANCELED":
                st.state, st.error = "FAILED", e
        st.done.set()
        return
    except Exception as e:  # a bug here is a 500 in the real service
        log.exception("statement %s", st.id)
        with STATE.lock:
            if st.state != "CANCELED":
                st.state, st.error = "FAILED", SqlError("INTERNAL_ERROR", str(e), "XX000")
        st.done.set()
        return
    rows = STATE.chunk_rows
    chunks = []
    for offset in range(0, table.num_rows, rows):
        part = table.slice(offset, rows)
        chunks.append((offset, part.num_rows, ipc_bytes(part)))
    with STATE.lock:
        if st.state != "CANCELED":
            st.table, st.chunks, st.state = table, chunks, "SUCCEEDED"
    st.done.set()


def columns(table: pa.Table) -> list[dict]:
    out = []
    for i, f in enumerate(table.schema):
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        col = {"name": f.name, "type_name": meta.get("type_name", "STRING"), "type_text": meta.get("type_text", "STRING"), "position": i}
        m = re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", col["type_text"])
        if m:
            col["type_precision"], col["type_scale"] = int(m.group(1)), int(m.group(2))
        out.append(col)
    return out


def link(base: str, st: Statement, i: int) -> dict:
    offset, count, data = st.chunks[i]
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=15)
    item = {
        "chunk_index": i,
        "row_offset": offset,
        "row_count": count,
        "byte_count": len(data),
        "external_link": f"{base}/__links/{st.id}/{i}?X-Amz-Signature={st.signature}&X-Amz-Expires=900",
        "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
    }
    if i + 1 < len(st.chunks):
        item["next_chunk_index"] = i + 1
        item["next_chunk_internal_link"] = f"/api/2.0/sql/statements/{st.id}/result/chunks/{i + 1}"
    return item


def response(base: str, st: Statement) -> dict:
    with STATE.lock:
        state = st.state
    out: dict = {"statement_id": st.id, "status": {"state": state}}
    if state == "FAILED" and st.error:
        out["status"]["error"] = {"error_code": st.error.error_code, "message": st.error.message}
        out["status"]["sql_state"] = st.error.sql_state
    if state == "SUCCEEDED":
        table = st.table
        out["manifest"] = {
            "format": st.format,
            "schema": {"column_count": table.num_columns, "columns": columns(table)},
            "total_chunk_count": len(st.chunks),
            "total_row_count": table.num_rows,
            "total_byte_count": sum(len(c[2]) for c in st.chunks),
            "truncated": False,
        }
        if st.chunks:
            out["manifest"]["chunks"] = [
                {"chunk_index": i, "row_offset": o, "row_count": n, "byte_count": len(b)}
                for i, (o, n, b) in enumerate(st.chunks)
            ]
            if st.disposition == "EXTERNAL_LINKS":
                out["result"] = {"external_links": [link(base, st, 0)]}
            else:
                out["result"] = inline_chunk(st, 0)
    return out


def inline_chunk(st: Statement, i: int) -> dict:
    offset, count, _ = st.chunks[i]
    part = st.table.slice(offset, count)
    rows = [[None if v is None else str(v) for v in row.values()] for row in part.to_pylist()]
    out = {"chunk_index": i, "row_offset": offset, "row_count": count, "data_array": rows}
    if i + 1 < len(st.chunks):
        out["next_chunk_index"] = i + 1
        out["next_chunk_internal_link"] = f"/api/2.0/sql/statements/{st.id}/result/chunks/{i + 1}"
    return out


def parse_wait(text) -> float | None:
    if text is None:
        return 10.0
    m = re.fullmatch(r"(\d+)s", str(text))
    if not m:
        return None
    n = int(m.group(1))
    return float(n) if n == 0 or 5 <= n <= 50 else None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # stderr, without the query strings
        log.info("%s %s", self.command, urlparse(self.path).path)

    def base(self) -> str:
        return f"http://{self.headers.get('Host') or '127.0.0.1'}"

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status: int, payload, content_type="application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorize(self) -> None:
        auth = self.headers.get("Authorization")
        if not auth:
            raise ApiError(401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API.")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with STATE.lock:
            expiry = STATE.tokens.get(token)
        if token == STATE.args.token or (expiry and expiry > time.time()):
            return
        raise ApiError(403, "PERMISSION_DENIED", "Invalid access token.")

    def handle_any(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        try:
            if path.startswith("/__test/"):
                return self.test_switch(method, path, query)
            if path == "/.well-known/databricks-config" and method == "GET":
                return self.send(200, {"oidc_endpoint": f"{self.base()}/oidc", "workspace_id": "1234567890123456", "cloud": "AWS"})
            if path == "/oidc/.well-known/oauth-authorization-server" and method == "GET":
                return self.send(200, {"issuer": f"{self.base()}/oidc", "authorization_endpoint": f"{self.base()}/oidc/v1/authorize", "token_endpoint": f"{self.base()}/oidc/v1/token"})
            if path == "/oidc/v1/token" and method == "POST":
                return self.token()
            m = RE_LINK.match(path)
            if m and method == "GET":
                return self.external_link(m.group(1), int(m.group(2)), query)
            self.authorize()
            if path == STATEMENTS and method == "POST":
                return self.execute()
            m = RE_STATEMENT.match(path)
            if m and method == "GET":
                STATE.count("polls")
                return self.send(200, response(self.base(), self.statement(m.group(1))))
            m = RE_CHUNK.match(path)
            if m and method == "GET":
                return self.chunk(m.group(1), int(m.group(2)))
            m = RE_CANCEL.match(path)
            if m and method == "POST":
                return self.cancel(m.group(1))
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        except ApiError as e:
            self.send(e.status, {"error_code": e.code, "message": e.message})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def statement(self, sid: str) -> Statement:
        with STATE.lock:
            st = STATE.statements.get(sid)
        if st is None:
            raise ApiError(404, "NOT_FOUND", f"The statement {sid} was not found.")
        return st

    def execute(self) -> None:
        try:
            req = json.loads(self.body() or b"{}")
        except ValueError:
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object: invalid JSON.")
        sql = req.get("statement")
        if not sql:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "statement is required.")
        if req.get("warehouse_id") != STATE.args.warehouse_id:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {req.get('warehouse_id')} does not exist.")
        disposition = req.get("disposition", "INLINE")
        fmt = req.get("format", "JSON_ARRAY")
        if disposition not in ("INLINE", "EXTERNAL_LINKS") or fmt not in ("JSON_ARRAY", "ARROW_STREAM", "CSV"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Invalid disposition or format.")
        if disposition == "INLINE" and fmt != "JSON_ARRAY":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{fmt} format is only supported with EXTERNAL_LINKS disposition.")
        if fmt == "CSV":
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "CSV is not served by this stand-in.")
        wait = parse_wait(req.get("wait_timeout"))
        if wait is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "wait_timeout must be 0s or between 5s and 50s.")
        if req.get("parameters"):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "parameters are not served by this stand-in.")
        st = Statement(sql, req.get("catalog"), req.get("schema"), disposition, fmt)
        with STATE.lock:
            STATE.statements[st.id] = st
            STATE.counts["statements"] += 1
            STATE.sql.append(sql)
        threading.Thread(target=run_statement, args=(st,), daemon=True).start()
        if wait and not st.done.wait(wait) and req.get("on_wait_timeout") == "CANCEL":
            self.cancel_statement(st)
        self.send(200, response(self.base(), st))

    def cancel_statement(self, st: Statement) -> str:
        with STATE.lock:
            before = st.state
            if before not in TERMINAL:
                st.state = "CANCELED"
            STATE.cancels.append({"statement_id": st.id, "state_before": before, "statement": st.sql})
        st.cancelled.set()
        return before

    def cancel(self, sid: str) -> None:
        st = self.statement(sid)
        before = self.cancel_statement(st)
        log.info("cancel %s (was %s)", sid, before)
        self.send(200, {})

    def chunk(self, sid: str, i: int) -> None:
        STATE.count("chunk_requests")
        st = self.statement(sid)
        with STATE.lock:
            state = st.state
        if state != "SUCCEEDED":
            raise ApiError(400, "INVALID_STATE", f"The statement {sid} is {state}; its result cannot be fetched.")
        if not 0 <= i < len(st.chunks):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"chunk_index {i} is out of range [0, {len(st.chunks)}).")
        if st.disposition == "EXTERNAL_LINKS":
            return self.send(200, {"external_links": [link(self.base(), st, i)]})
        return self.send(200, inline_chunk(st, i))

    def external_link(self, sid: str, i: int, query) -> None:
        with STATE.lock:
            st = STATE.statements.get(sid)
        if st is None or query.get("X-Amz-Signature", [""])[0] != st.signature or i >= len(st.chunks):
            return self.send(403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml")
        if self.headers.get("Authorization"):
            STATE.count("links_refused")
            return self.send(400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>", "application/xml")
        with STATE.lock:
            STATE.links_in_flight += 1
            STATE.counts["max_links_in_flight"] = max(STATE.counts["max_links_in_flight"], STATE.links_in_flight)
        try:
            if STATE.link_delay_ms:
                time.sleep(STATE.link_delay_ms / 1000)
            if STATE.link_fail:
                STATE.count("links_failed")
                return self.send(503, b"<Error><Code>SlowDown</Code></Error>", "application/xml")
            STATE.count("links_served")
            self.send(200, st.chunks[i][2], "application/vnd.apache.arrow.stream")
        finally:
            with STATE.lock:
                STATE.links_in_flight -= 1

    def token(self) -> None:
        form = parse_qs(self.body().decode())
        client_id = form.get("client_id", [None])[0]
        client_secret = form.get("client_secret", [None])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type", [None])[0] != "client_credentials":
            return self.send(400, {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"})
        if client_id != STATE.args.client_id or client_secret != STATE.args.client_secret:
            return self.send(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        token = "eyJ" + secrets.token_urlsafe(24)
        with STATE.lock:
            expires_in = STATE.oauth_expires_in
            STATE.tokens[token] = time.time() + expires_in
            STATE.counts["tokens_issued"] += 1
        self.send(200, {"access_token": token, "token_type": "Bearer", "expires_in": expires_in, "scope": form.get("scope", ["all-apis"])[0]})

    def test_switch(self, method: str, path: str, query) -> None:
        if path == "/__test/log":
            with STATE.lock:
                return self.send(200, dict(STATE.counts, cancels=list(STATE.cancels), sql=list(STATE.sql)))
        if path == "/__test/config" and method == "POST":
            one = lambda k, d: query.get(k, [d])[0]
            with STATE.lock:
                STATE.chunk_rows = max(1, int(one("chunk_rows", STATE.chunk_rows)))
                STATE.statement_delay_ms = int(one("statement_delay_ms", STATE.statement_delay_ms))
                STATE.link_delay_ms = int(one("link_delay_ms", STATE.link_delay_ms))
                STATE.link_fail = one("link_fail", "1" if STATE.link_fail else "0") == "1"
                STATE.oauth_expires_in = int(one("oauth_expires_in", STATE.oauth_expires_in))
                STATE.reset()
            return self.send(200, {})
        raise ApiError(404, "ENDPOINT_NOT_FOUND", path)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chunk-rows", type=int, default=50)
    p.add_argument("--token", default="dapi-test-token")
    p.add_argument("--client-id", default="test-client")
    p.add_argument("--client-secret", default="test-secret")
    p.add_argument("--warehouse-id", default="test-warehouse")
    p.add_argument("--exit-on-stdin-close", action="store_true")
    args = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    global STATE
    STATE = State(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.exit_on_stdin_close:
        def watch():
            sys.stdin.read()
            server.shutdown()
        threading.Thread(target=watch, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
