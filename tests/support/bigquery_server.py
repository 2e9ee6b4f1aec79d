"""A BigQuery REST API v2 stand-in on DuckDB, for the daemon's tests.

Serves the surfaces the daemon (and `google-cloud-bigquery`'s
`Client.query_and_wait`) use, with BigQuery's result shapes, pagination,
long-running hand-offs and errors:

- POST /token                                   OAuth token for a service-account JWT
- POST /bigquery/v2/projects/{p}/queries        jobs.query
- GET  /bigquery/v2/projects/{p}/queries/{job}  jobs.getQueryResults (polls, pages)
- GET  /bigquery/v2/projects/{p}/jobs/{job}     jobs.get
- POST /bigquery/v2/projects/{p}/jobs/{job}/cancel   jobs.cancel
- GET  /bigquery/v2/projects/{p}/datasets       datasets.list
- GET  /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}   tables.get

A project is a DuckDB catalog (attached in memory on first use), a dataset a
schema. The SQL is BigQuery's standard SQL, translated to DuckDB's for the
forms the tests and the daemon use (`translate`). Test switches: POST
/__test/config?query_delay_ms=&page_rows_cap=&token_expires_in=&fail_next=
(resets counters); GET /__test/log. `tests/support/BIGQUERY_NOTES.md` says
what is covered and where this differs from the real service.

Usage: bigquery_server.py --port N [--exit-on-stdin-close]; prints "READY <port>".
"""

import argparse
import base64
import datetime as dt
import decimal
import json
import math
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import duckdb

DB = duckdb.connect()
DB.execute("SET TimeZone = 'UTC'")
DB_LOCK = threading.Lock()
ATTACHED = set()

MACROS = [
    "CREATE MACRO timestamp_micros(n) AS make_timestamp(CAST(n AS BIGINT))::TIMESTAMPTZ",
    "CREATE MACRO bq_datetime(t, z) AS timezone(z, t)",
    "CREATE MACRO date_from_unix_date(d) AS (DATE '1970-01-01' + CAST(d AS INTEGER))",
    "CREATE MACRO unix_micros(t) AS epoch_us(t)",
]
for m in MACROS:
    DB.execute(m)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# normalize() rounds to the context precision: BIGNUMERIC has 76 digits.
decimal.DefaultContext.prec = 100  # the context of threads started from now on
decimal.getcontext().prec = 100


class BqError(Exception):
    def __init__(self, status, reason, message, http_status_name):
        super().__init__(message)
        self.status, self.reason, self.message, self.name = status, reason, message, http_status_name

    def body(self):
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
                "status": self.name,
            }
        }


def invalid_query(msg):
    return BqError(400, "invalidQuery", msg, "INVALID_ARGUMENT")


def not_found(msg):
    return BqError(404, "notFound", "Not found: " + msg, "NOT_FOUND")


# --- SQL translation ---------------------------------------------------------

TYPE_WORDS = {
    "INT64": "BIGINT", "INTEGER": "BIGINT", "INT": "BIGINT", "SMALLINT": "BIGINT",
    "TINYINT": "BIGINT", "BYTEINT": "BIGINT", "BIGINT": "BIGINT",
    "FLOAT64": "DOUBLE", "BOOL": "BOOLEAN", "BYTES": "BLOB", "STRING": "VARCHAR",
    "NUMERIC": "DECIMAL(38,9)", "DECIMAL": "DECIMAL(38,9)",
    # DuckDB's decimals stop at 38 digits: BIGNUMERIC is kept as DECIMAL(38,10)
    # (28 integer and 10 fraction digits), which only the schema mapping tells apart.
    "BIGNUMERIC": "DECIMAL(38,10)", "BIGDECIMAL": "DECIMAL(38,10)",
    "TIMESTAMP": "TIMESTAMPTZ", "DATETIME": "TIMESTAMP",
}
FUNCTION_WORDS = {"DATETIME": "bq_datetime", "COUNTIF": "count_if"}
TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<comment>--[^\n]*|\#[^\n]*)
    |(?P<bytes>[bB](?P<bq>['"])(?:\\.|(?!(?P=bq)).)*(?P=bq))
    |(?P<str>(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q))
    |(?P<ident>`(?:\\.|[^`\\])*`)
    |(?P<word>[A-Za-z_][A-Za-z_0-9]*)
    |(?P<other>.)""",
    re.X | re.S,
)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`", "0": "\0"}


def unescape(body):
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x" and i + 3 < len(body):
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def translate(sql):
    """BigQuery standard SQL -> DuckDB SQL, and the projects it names."""
    tokens = [(m.lastgroup if m.lastgroup not in ("q", "bq") else "str", m.group()) for m in TOKEN.finditer(sql)]
    tokens = [(k if k != "bq" else "bytes", t) for k, t in tokens]
    out, projects, i = [], set(), 0
    sig = [j for j, (k, _) in enumerate(tokens) if k not in ("ws", "comment")]

    def next_sig(j):
        for s in sig:
            if s > j:
                return tokens[s][1]
        return ""

    # Identifier chains: `a`.`b`.`c` or `a.b.c`; three parts start with a project.
    chain = []

    def flush_chain():
        if len(chain) == 3 or (len(chain) == 2 and re.search(r"\bSCHEMA\s*(IF\s+NOT\s+EXISTS\s*)?$", "".join(out[: chain_start[0]]), re.I)):
            projects.add(chain[0])
        chain.clear()

    chain_start = [0]
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "ident":
            parts = unescape(text[1:-1]).split(".")
            if not chain:
                chain_start[0] = len(out)
            chain.extend(parts)
            out.append(".".join('"' + p.replace('"', '""') + '"' for p in parts))
            if next_sig(i) == ".":
                i += 1
                continue
            flush_chain()
        elif kind == "other" and text == "." and chain:
            out.append(text)
        elif kind == "str":
            out.append("'" + unescape(text[1:-1]).replace("'", "''") + "'")
        elif kind == "bytes":
            data = unescape(text[2:-1]).encode("latin-1")
            out.append("'" + "".join("\\x%02X" % b for b in data) + "'::BLOB")
        elif kind == "word":
            up = text.upper()
            nxt = next_sig(i)
            if up == "ARRAY" and nxt == "<":
                # ARRAY<T> -> T[] (T translated the same way)
                depth, j = 0, i + 1
                inner = []
                while j < len(tokens):
                    t = tokens[j][1]
                    if t == "<":
                        depth += 1
                        if depth == 1:
                            j += 1
                            continue
                    elif t == ">":
                        depth -= 1
                        if depth == 0:
                            break
                    inner.append(t)
                    j += 1
                elem, _ = translate("".join(inner))
                out.append(elem.strip() + "[]")
                i = j + 1
                continue
            if up == "CURRENT_TIMESTAMP" and nxt == "(":
                out.append("get_current_timestamp")
            elif up in FUNCTION_WORDS and nxt == "(":
                out.append(FUNCTION_WORDS[up])
            elif up in TYPE_WORDS and nxt != "(" and not (up in ("NUMERIC", "DECIMAL", "BIGNUMERIC") and nxt == "("):
                out.append(TYPE_WORDS[up])
            elif up in ("NUMERIC", "BIGNUMERIC", "BIGDECIMAL") and nxt == "(":
                out.append("DECIMAL")
            else:
                out.append(text)
        else:
            if chain and kind not in ("ws", "comment"):
                flush_chain()
            out.append(text)
        i += 1
    if chain:
        flush_chain()
    return "".join(out), projects


def ensure_project(project):
    with DB_LOCK:
        if project not in ATTACHED:
            try:
                DB.execute('ATTACH \':memory:\' AS "%s"' % project.replace('"', '""'))
            except duckdb.Error:
                pass
            ATTACHED.add(project)


# --- types and cells ---------------------------------------------------------


def field_of(name, duck_type):
    t = str(duck_type)
    if t.endswith("[]"):
        f = field_of(name, t[:-2])
        f["mode"] = "REPEATED"
        return f
    up = t.upper()
    if up.startswith("STRUCT("):
        return {"name": name, "type": "RECORD", "mode": "NULLABLE", "fields": []}
    m = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", up)
    if m:
        bq = "NUMERIC" if int(m.group(2)) <= 9 else "BIGNUMERIC"
    else:
        bq = {
            "BIGINT": "INTEGER", "INTEGER": "INTEGER", "SMALLINT": "INTEGER", "TINYINT": "INTEGER",
            "HUGEINT": "INTEGER", "UBIGINT": "INTEGER", "UINTEGER": "INTEGER",
            "DOUBLE": "FLOAT", "FLOAT": "FLOAT", "BOOLEAN": "BOOLEAN", "VARCHAR": "STRING",
            "BLOB": "BYTES", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "TIMESTAMP": "DATETIME",
            "DATE": "DATE", "TIME": "TIME", "JSON": "JSON",
        }.get(up, "STRING")
    return {"name": name, "type": bq, "mode": "NULLABLE"}


def fmt_decimal(d):
    s = format(d.normalize(), "f") if d != 0 else "0"
    return s


def cell(field, value, int64_ts):
    if field.get("mode") == "REPEATED":
        elem = dict(field, mode="NULLABLE")
        return [{"v": cell(elem, v, int64_ts)} for v in (value or [])]
    if value is None:
        return None
    t = field["type"]
    if t == "BOOLEAN":
        return "true" if value else "false"
    if t == "FLOAT":
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v)
    if t in ("NUMERIC", "BIGNUMERIC"):
        return fmt_decimal(decimal.Decimal(value))
    if t == "BYTES":
        return base64.b64encode(bytes(value)).decode()
    if t == "TIMESTAMP":
        micros = (value - EPOCH) // dt.timedelta(microseconds=1)
        return str(micros) if int64_ts else repr(micros / 1e6)
    if t == "DATETIME":
        return value.isoformat()
    if t in ("DATE", "TIME"):
        return value.isoformat()
    if t == "RECORD":
        return {"f": [{"v": json.dumps(v, default=str)} for v in value.values()]}
    return str(value)


# --- jobs ----------------------------------------------------------------------

STATE = {
    "query_delay_ms": 0,
    "page_rows_cap": 0,
    "token_expires_in": 3600,
    "fail_next": "",
}
LOG_LOCK = threading.Lock()


def fresh_log():
    return {
        "queries": 0, "polls": 0, "pages": 0, "gets": 0, "tables_get": 0, "datasets_list": 0,
        "tokens_issued": 0, "unauthenticated": 0, "rejected_tokens": 0, "max_results": [],
        "cancels": [], "sql": [], "page_tokens_served": 0,
    }


LOG = fresh_log()
TOKENS = {}
JOBS = {}
JOBS_LOCK = threading.Lock()


class Job:
    def __init__(self, project, sql, location, default_dataset=None):
        self.project, self.sql, self.location = project, sql, location or "US"
        # jobs.query's `defaultDataset` ({projectId, datasetId}): where
        # unqualified table names resolve, as in the service.
        self.default_dataset = default_dataset
        self.id = "job_" + uuid.uuid4().hex[:20]
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.error = None
        self.fields, self.rows, self.dml = None, [], None
        self.created = time.time()
        self.ended = None

    def ref(self):
        return {"projectId": self.project, "jobId": self.id, "location": self.location}

    def run(self, delay_ms):
        try:
            if delay_ms and re.search(r"\bFROM\b", self.sql, re.I):
                if self.cancelled.wait(delay_ms / 1000):
                    raise BqError(400, "stopped", "Job execution was cancelled: User requested cancellation", "INVALID_ARGUMENT")
            duck, projects = translate(self.sql)
            default = self.default_dataset or {}
            default_project = default.get("projectId") or self.project
            for p in projects | {self.project, default_project}:
                ensure_project(p)
            cur = DB.cursor()
            try:
                if default.get("datasetId"):
                    quote = lambda name: '"' + name.replace('"', '""') + '"'
                    try:
                        cur.execute("USE %s.%s" % (quote(default_project), quote(default["datasetId"])))
                    except duckdb.Error:
                        raise not_found("Dataset %s:%s was not found in location %s" % (default_project, default["datasetId"], self.location)) from None
                cur.execute(duck)
                first = self.sql.lstrip().split(None, 1)[0].upper() if self.sql.strip() else ""
                if first in ("SELECT", "WITH", "(") and cur.description is not None:
                    self.fields = [field_of(d[0], d[1]) for d in cur.description]
                    self.rows = cur.fetchall()
                elif first in ("INSERT", "UPDATE", "DELETE", "MERGE"):
                    r = cur.fetchall()
                    self.dml = int(r[0][0]) if r and r[0] else 0
            finally:
                cur.close()
            if self.cancelled.is_set():
                raise BqError(400, "stopped", "Job execution was cancelled: User requested cancellation", "INVALID_ARGUMENT")
        except BqError as e:
            self.error = e
        except duckdb.CatalogException as e:
            m = re.search(r'Table with name (\S+) does not exist', str(e))
            if m:
                self.error = not_found("Table %s was not found in location %s" % (m.group(1), self.location))
            else:
                self.error = invalid_query(str(e).splitlines()[0])
        except duckdb.BinderException as e:
            m = re.search(r'column "?([^" ]+)"? not found', str(e))
            self.error = invalid_query("Unrecognized name: %s" % m.group(1) if m else str(e).splitlines()[0])
        except duckdb.Error as e:
            self.error = invalid_query(str(e).splitlines()[0])
        finally:
            self.ended = time.time()
            self.done.set()

    def state(self):
        return "DONE" if self.done.is_set() else "RUNNING"

    def resource(self):
        status = {"state": self.state()}
        if self.done.is_set() and self.error:
            status["errorResult"] = self.error.body()["error"]["errors"][0]
            status["errors"] = self.error.body()["error"]["errors"]
        ms = lambda t: str(int(t * 1000))
        stats = {"creationTime": ms(self.created), "startTime": ms(self.created)}
        if self.ended:
            stats["endTime"] = ms(self.ended)
            stats["query"] = {"totalBytesProcessed": "0", "statementType": "SELECT"}
        return {
            "kind": "bigquery#job", "id": "%s:%s.%s" % (self.project, self.location, self.id),
            "jobReference": self.ref(), "status": status, "statistics": stats,
            "configuration": {"jobType": "QUERY", "query": {"query": self.sql, "useLegacySql": False}},
        }

    def results(self, max_results, offset, int64_ts, kind):
        """A jobs.query / getQueryResults answer of a complete job."""
        if self.error:
            raise self.error
        body = {"kind": kind, "jobReference": self.ref(), "jobComplete": True, "cacheHit": False,
                "totalBytesProcessed": "0"}
        if self.fields is None:
            if self.dml is not None:
                body["numDmlAffectedRows"] = str(self.dml)
            return body
        body["schema"] = {"fields": self.fields}
        body["totalRows"] = str(len(self.rows))
        n = max_results if max_results is not None else 100000
        cap = STATE["page_rows_cap"]
        if cap:
            n = min(n, cap)
        page = self.rows[offset : offset + n]
        if page:
            body["rows"] = [{"f": [{"v": cell(f, v, int64_ts)} for f, v in zip(self.fields, r)]} for r in page]
        if offset + len(page) < len(self.rows):
            body["pageToken"] = base64.urlsafe_b64encode(("%s:%d" % (self.id, offset + len(page))).encode()).decode()
        return body


def wait_for(job, timeout_ms):
    job.done.wait(min(max(timeout_ms, 0), 10000) / 1000)


# --- HTTP ------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def authenticated(self):
        auth = self.headers.get("Authorization")
        if auth is None:
            with LOG_LOCK:
                LOG["unauthenticated"] += 1
            return True
        token = auth[7:] if auth.startswith("Bearer ") else None
        if token is None or TOKENS.get(token, 0) < time.time():
            with LOG_LOCK:
                LOG["rejected_tokens"] += 1
            self.reply(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                                       "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header"}],
                                       "status": "UNAUTHENTICATED"}})
            return False
        return True

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        url = urlparse(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.body()
        try:
            if url.path == "/token" and method == "POST":
                return self.token(raw)
            if url.path.startswith("/__test/"):
                return self.test_hook(url.path, params)
            parts = url.path.strip("/").split("/")
            if parts[:2] != ["bigquery", "v2"] or len(parts) < 4 or parts[2] != "projects":
                raise BqError(404, "notFound", "Not found: URL %s" % url.path, "NOT_FOUND")
            if not self.authenticated():
                return
            rest, project = parts[4:], parts[3]
            if STATE["fail_next"]:
                reason, STATE["fail_next"] = STATE["fail_next"], ""
                raise BqError(500 if reason == "backendError" else 403, reason, "injected " + reason, "INTERNAL")
            if method == "POST" and rest == ["queries"]:
                return self.query(project, json.loads(raw or b"{}"))
            if method == "GET" and len(rest) == 2 and rest[0] == "queries":
                return self.get_results(rest[1], params)
            if method == "GET" and len(rest) == 2 and rest[0] == "jobs":
                with LOG_LOCK:
                    LOG["gets"] += 1
                return self.reply(200, self.job(rest[1]).resource())
            if method == "POST" and len(rest) == 3 and rest[0] == "jobs" and rest[2] == "cancel":
                return self.cancel(rest[1])
            if method == "GET" and rest == ["datasets"]:
                return self.datasets(project)
            if method == "GET" and len(rest) == 4 and rest[0] == "datasets" and rest[2] == "tables":
                return self.table(project, rest[1], rest[3])
            raise BqError(404, "notFound", "Not found: URL %s" % url.path, "NOT_FOUND")
        except BqError as e:
            self.reply(e.status, e.body())
        except Exception as e:  # noqa: BLE001 - a test server reports everything
            sys.stderr.write("internal error: %r\n" % e)
            self.reply(500, BqError(500, "internalError", str(e), "INTERNAL").body())

    def token(self, raw):
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.reply(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        try:
            header, payload, _sig = form["assertion"].split(".")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            hdr = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
            assert hdr.get("alg") == "RS256"
            assert claims["iss"] and "bigquery" in claims["scope"] and claims["aud"].endswith("/token")
            assert claims["exp"] > time.time()
        except Exception:  # noqa: BLE001
            return self.reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        token = "ya29.test-" + uuid.uuid4().hex
        TOKENS[token] = time.time() + STATE["token_expires_in"]
        with LOG_LOCK:
            LOG["tokens_issued"] += 1
        self.reply(200, {"access_token": token, "expires_in": STATE["token_expires_in"], "token_type": "Bearer"})

    def job(self, job_id):
        with JOBS_LOCK:
            job = JOBS.get(job_id)
        if job is None:
            raise not_found("Job %s" % job_id)
        return job

    def query(self, project, req):
        if req.get("useLegacySql", True) is not False:
            raise BqError(400, "invalid", "Legacy SQL is not supported by this server", "INVALID_ARGUMENT")
        sql = req.get("query") or ""
        job = Job(project, sql, req.get("location"), req.get("defaultDataset"))
        with JOBS_LOCK:
            JOBS[job.id] = job
        with LOG_LOCK:
            LOG["queries"] += 1
            LOG["sql"].append(sql)
            LOG["max_results"].append(req.get("maxResults"))
        threading.Thread(target=job.run, args=(STATE["query_delay_ms"],), daemon=True).start()
        wait_for(job, int(req.get("timeoutMs", 10000)))
        int64_ts = bool(req.get("formatOptions", {}).get("useInt64Timestamp"))
        if not job.done.is_set():
            return self.reply(200, {"kind": "bigquery#queryResponse", "jobReference": job.ref(), "jobComplete": False})
        max_results = req.get("maxResults")
        self.reply(200, job.results(int(max_results) if max_results is not None else None, 0, int64_ts, "bigquery#queryResponse"))

    def get_results(self, job_id, params):
        job = self.job(job_id)
        token = params.get("pageToken")
        offset = int(params.get("startIndex", 0))
        if token:
            try:
                tid, off = base64.urlsafe_b64decode(token.encode()).decode().rsplit(":", 1)
                assert tid == job.id
                offset = int(off)
            except Exception:  # noqa: BLE001
                raise BqError(400, "invalid", "Invalid page token", "INVALID_ARGUMENT")
        wait_for(job, int(params.get("timeoutMs", 10000)))
        with LOG_LOCK:
            if token:
                LOG["pages"] += 1
            else:
                LOG["polls"] += 1
        if not job.done.is_set():
            return self.reply(200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": job.ref(), "jobComplete": False})
        int64_ts = params.get("formatOptions.useInt64Timestamp", "false").lower() == "true"
        mr = params.get("maxResults")
        self.reply(200, job.results(int(mr) if mr else None, offset, int64_ts, "bigquery#getQueryResultsResponse"))

    def cancel(self, job_id):
        job = self.job(job_id)
        with LOG_LOCK:
            LOG["cancels"].append({"job_id": job_id, "state_before": job.state(), "query": job.sql})
        job.cancelled.set()
        self.reply(200, {"kind": "bigquery#jobCancelResponse", "job": job.resource()})

    def datasets(self, project):
        ensure_project(project)
        with LOG_LOCK:
            LOG["datasets_list"] += 1
        cur = DB.cursor()
        names = [r[0] for r in cur.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ? AND schema_name NOT IN ('main', 'information_schema', 'pg_catalog')",
            [project]).fetchall()]
        cur.close()
        body = {"kind": "bigquery#datasetList", "etag": "x"}
        if names:
            body["datasets"] = [{"kind": "bigquery#dataset", "id": "%s:%s" % (project, n),
                                 "datasetReference": {"projectId": project, "datasetId": n}, "location": "US"} for n in names]
        self.reply(200, body)

    def table(self, project, dataset, table):
        ensure_project(project)
        with LOG_LOCK:
            LOG["tables_get"] += 1
        q = lambda s: '"' + s.replace('"', '""') + '"'
        cur = DB.cursor()
        try:
            cur.execute("SELECT * FROM %s.%s.%s LIMIT 0" % (q(project), q(dataset), q(table)))
            fields = [field_of(d[0], d[1]) for d in cur.description]
        except duckdb.Error:
            raise not_found("Table %s:%s.%s" % (project, dataset, table))
        finally:
            cur.close()
        self.reply(200, {"kind": "bigquery#table", "id": "%s:%s.%s" % (project, dataset, table),
                         "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
                         "schema": {"fields": fields}, "type": "TABLE", "location": "US"})

    def test_hook(self, path, params):
        global LOG
        if path == "/__test/config":
            for k, v in params.items():
                if k not in STATE:
                    return self.reply(400, {"error": "unknown switch " + k})
                STATE[k] = v if k == "fail_next" else int(v)
            with LOG_LOCK:
                LOG = fresh_log()
            return self.reply(200, STATE)
        if path == "/__test/log":
            with LOG_LOCK:
                return self.reply(200, LOG)
        return self.reply(404, {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--exit-on-stdin-close", action="store_true")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.exit_on_stdin_close:
        def watch():
            sys.stdin.read()
            import os
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    print("READY %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
