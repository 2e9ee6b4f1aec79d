"""Serve the daemon's Profiles Store with Feast's own feature server, for the
read benchmark (scripts/bench.sh): builds a Feast feature repo whose registry
holds our views as Feast feature views (the same one tests/support/feast_read.py
builds, so Feast reads exactly the keys the daemon writes), then replaces
itself with `feast serve` on it.

Usage:
    PY=$(scripts/python-env.sh feast)
    $PY scripts/feast_serve.py --redis redis://127.0.0.1:6379 --view views/bench.json \
        --repo DIR --port 6566 [--project signals] [--workers 2] \
        [--redis-type redis|redis_cluster|redis_sentinel] [--sentinel-master NAME]

--redis may be given more than once (a cluster's seed nodes, the sentinels).
--view is one of our view files (JSON: one view or a list); repeat for more.
DIR is created if missing and rewritten. Feast answers
`POST /get-online-features` on 127.0.0.1:PORT; `GET /health` says when it is up.
Feast's defaults that would skew a benchmark are overridden: no access log,
no worker restart every 1,000 requests (`--max-requests 0`).
"""

import argparse
import contextlib
import json
import os
import shutil
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "support"))

import feast_read  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", action="append", required=True)
    p.add_argument("--redis-type", default="redis")
    p.add_argument("--sentinel-master")
    p.add_argument("--project", default="signals")
    p.add_argument("--view", action="append", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--port", type=int, default=6566)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()

    views = []
    for path in args.view:
        with open(path) as f:
            v = json.load(f)
        views.extend(v if isinstance(v, list) else [v])
    req = {
        "redis": args.redis if len(args.redis) > 1 else args.redis[0],
        "redis_type": args.redis_type,
        "project": args.project,
        "views": views,
    }
    if args.sentinel_master:
        req["sentinel_master"] = args.sentinel_master
    shutil.rmtree(args.repo, ignore_errors=True)
    os.makedirs(args.repo)
    # Feast prints progress while applying; keep stdout for the server.
    with contextlib.redirect_stdout(sys.stderr):
        feast_read.build_store(req, args.repo)
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.execv(
        feast,
        [
            feast,
            "--chdir",
            args.repo,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
            "--no-access-log",
            "--max-requests",
            "0",
        ],
    )


if __name__ == "__main__":
    main()
