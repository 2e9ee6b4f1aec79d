"""Runs queries through the vendor's own client (`google-cloud-bigquery`'s
`Client.query_and_wait`: jobs.query, then jobs.get / jobs.getQueryResults
while the job runs and for every further page) against a BigQuery endpoint,
and prints every row, every cell in a canonical JSON form the Rust test
builds from the daemon's Arrow pages too:

INT64 "123"; NUMERIC/BIGNUMERIC the decimal text, normalized ("12.34", "5");
FLOAT64 repr ("0.1", "nan", "inf"); BOOL true/false; STRING text; BYTES
base64; TIMESTAMP and DATETIME microseconds since the epoch (DATETIME's
wall time counted as UTC); DATE days since the epoch; JSON the document
re-serialized with sorted keys; ARRAY a JSON list of its elements.

Usage: bigquery_client.py REQUEST.json  (request: {"api_endpoint",
"project", "queries": [sql, ...], "page_size"}); prints {"results": [{"fields",
"rows"}, ...]}.
"""

import base64
import datetime as dt
import decimal
import json
import sys

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# normalize() rounds to the context precision: BIGNUMERIC has 76 digits.
decimal.DefaultContext.prec = 100  # the context of threads started from now on
decimal.getcontext().prec = 100


def canonical(field_type, value):
    if value is None:
        return None
    if field_type in ("INTEGER", "INT64"):
        return str(value)
    if field_type in ("NUMERIC", "BIGNUMERIC"):
        d = decimal.Decimal(value)
        return format(d.normalize(), "f") if d != 0 else "0"
    if field_type in ("FLOAT", "FLOAT64"):
        return repr(float(value))
    if field_type in ("BOOLEAN", "BOOL"):
        return bool(value)
    if field_type == "BYTES":
        return base64.b64encode(value).decode()
    if field_type == "TIMESTAMP":
        return (value - EPOCH) // dt.timedelta(microseconds=1)
    if field_type == "DATETIME":
        return (value.replace(tzinfo=dt.timezone.utc) - EPOCH) // dt.timedelta(microseconds=1)
    if field_type == "DATE":
        return (value - dt.date(1970, 1, 1)).days
    if field_type == "JSON":
        return json.dumps(value, sort_keys=True)
    return str(value)


def main():
    req = json.load(open(sys.argv[1]))
    client = bigquery.Client(
        project=req["project"],
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=req["api_endpoint"]),
    )
    results = []
    for sql in req["queries"]:
        rows = client.query_and_wait(sql, page_size=req.get("page_size"))
        fields = [(f.name, f.field_type, f.mode) for f in rows.schema]
        out = []
        for row in rows:
            cells = []
            for (name, ftype, mode), value in zip(fields, row.values()):
                if mode == "REPEATED":
                    cells.append([canonical(ftype, v) for v in value])
                else:
                    cells.append(canonical(ftype, value))
            out.append(cells)
        results.append({"fields": [[n, t, m] for n, t, m in fields], "rows": out})
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
