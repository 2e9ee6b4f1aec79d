"""Read profiles back through the real Feast SDK, for integration tests.

Usage:
    PY=$(scripts/python-env.sh feast)
    echo '<request json>' | $PY tests/support/feast_read.py          # request on stdin
    $PY tests/support/feast_read.py '<request json>'                  # or as one argument
    $PY tests/support/feast_read.py @request.json                     # or from a file

Request (JSON object):
    redis      "host:port", "redis://[:password@]host:port[/db]" or a Feast
               connection_string ("host:port,db=1,password=x") - required; a list
               of them for a cluster's seed nodes or the sentinels (parameters
               such as the password are taken from the first)
    redis_type optional: "redis" (default), "redis_cluster" or "redis_sentinel",
               Feast's online_store redis_type
    sentinel_master  optional: the master's name for redis_sentinel (Feast's
               default "mymaster")
    project    Feast project name - required
    views      our view JSON objects: {"name", "version", "entity": {"name"},
               "fields": [{"name", "type"}], "ttl"?}; feature view name is
               "{name}_v{version}", join key = entity name - required
    entities   entity values, one output row each: either plain strings (used for
               every join key the views need) or objects {join_key: value} - required
    features   optional list of "{feature_view}:{feature}"; default: every field of
               every view
    full_feature_names  optional bool (default false): output keys become
               "{feature_view}__{feature}" (needed when two views share a field name)
    use_view_ttl  optional bool (default false): give each FeatureView the view's
               ISO-8601 "ttl" instead of 0 (= no limit). Feast 0.67's Python online
               read from Redis ignores ttl either way (see FEAST_NOTES.md).

Output (stdout, one JSON object; everything else goes to stderr):
    "<feature>": [value per entity row]     as get_online_features(...).to_dict()
                                            returns it, JSON-encoded:
                 null                       missing / NULL
                 true/false, integers, floats (float32 comes back widened to a
                                            Python float: 1.1f -> 1.100000023841858)
                 "NaN", "Infinity", "-Infinity" for non-finite floats
                 strings as strings
                 {"bytes_b64": "..."}       bytes
                 "2023-11-14T22:13:20+00:00" datetimes (isoformat)
                 lists of the above
    "types":     {"<feature>": [Python type name of each value, null for None]};
                 lists give "list[<element type>]" ("list[]" if empty, element types
                 joined with "|" if mixed)
    "kinds":     {"<feature>": [Value oneof set on the wire, e.g. "int32_val",
                 "float_list_val", or null]} - tells int32 from int64, float from
                 double, where Python types cannot
    "statuses":  {"<feature>": ["PRESENT" | "NOT_FOUND" | "NULL_VALUE" | "OUTSIDE_MAX_AGE"]}
    "event_timestamps": {"<feature>": [ISO-8601 UTC with nanoseconds as Feast
                 returns them, e.g. "2023-11-14T22:13:20.123456000Z"]}
    Entity join-key columns appear as features do, as to_dict() includes them.
    A feature named like one of the reserved keys above is an error (exit 2).

Exit status: 0 ok, 2 bad request, 1 Feast failure (traceback on stderr).
"""

import base64
import contextlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote, urlparse

RESERVED = ("types", "kinds", "statuses", "event_timestamps")


def fail(msg: str, code: int = 2):
    print(f"feast_read.py: {msg}", file=sys.stderr)
    sys.exit(code)


def load_request() -> dict:
    if len(sys.argv) > 2:
        fail("expected at most one argument (the request JSON, or @file)")
    if len(sys.argv) == 2:
        arg = sys.argv[1]
        raw = open(arg[1:]).read() if arg.startswith("@") else arg
    else:
        raw = sys.stdin.read()
    try:
        req = json.loads(raw)
    except json.JSONDecodeError as e:
        fail(f"request is not JSON: {e}")
    if not isinstance(req, dict):
        fail("request must be a JSON object")
    for k in ("redis", "project", "views", "entities"):
        if k not in req:
            fail(f"request lacks {k!r}")
    return req


def connection_string(redis) -> str:
    """Feast wants "host:port[,host:port...],param=value"; accept redis:// URLs
    and lists of either (the addresses of all, the parameters of the first)."""
    if isinstance(redis, list):
        if not redis:
            fail("redis: empty list")
        parts = [connection_string(r).split(",") for r in redis]
        return ",".join([p[0] for p in parts] + parts[0][1:])
    if "://" not in redis:
        return redis
    u = urlparse(redis)
    if u.scheme not in ("redis", "rediss"):
        fail(f"unsupported redis URL scheme {u.scheme!r}")
    parts = [f"{u.hostname or 'localhost'}:{u.port or 6379}"]
    db = u.path.lstrip("/")
    if db:
        parts.append(f"db={int(db)}")
    if u.username:
        parts.append(f"username={unquote(u.username)}")
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


_ISO_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_ttl(ttl) -> timedelta:
    if ttl is None:
        return timedelta(0)
    if isinstance(ttl, (int, float)):
        return timedelta(seconds=ttl)
    m = _ISO_DURATION.match(ttl)
    if not m or ttl in ("P", "PT"):
        fail(f"cannot parse view ttl {ttl!r} (expected ISO-8601 days/time duration)")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return timedelta(days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def feast_type(type_name: str):
    from feast.types import (
        Array,
        Bool,
        Bytes,
        Float32,
        Float64,
        Int32,
        Int64,
        String,
        UnixTimestamp,
    )

    scalars = {
        "bytes": Bytes,
        "string": String,
        "int32": Int32,
        "int64": Int64,
        "double": Float64,
        "float": Float32,
        "bool": Bool,
        "unix_timestamp": UnixTimestamp,
    }
    t = type_name.lower()
    if t.endswith("_list") and t[: -len("_list")] in scalars:
        return Array(scalars[t[: -len("_list")]])
    if t in scalars:
        return scalars[t]
    fail(f"unknown field type {type_name!r}")


def build_store(req: dict, repo: str):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.value_type import ValueType

    import yaml

    config = {
        "project": req["project"],
        "provider": "local",
        "registry": {"registry_type": "file", "path": os.path.join(repo, "registry.db")},
        "online_store": {
            "type": "redis",
            "connection_string": connection_string(req["redis"]),
            "redis_type": req.get("redis_type", "redis"),
        },
        "entity_key_serialization_version": 3,
    }
    if "sentinel_master" in req:
        config["online_store"]["sentinel_master"] = req["sentinel_master"]
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    store = FeatureStore(repo_path=repo)

    entities = {}
    views = []
    for v in req["views"]:
        ent_name = v["entity"]["name"]
        if ent_name not in entities:
            entities[ent_name] = Entity(
                name=ent_name, join_keys=[ent_name], value_type=ValueType.STRING
            )
        fv_name = f"{v['name']}_v{v['version']}"
        # Never read: the online path only needs the registry entry.
        source = FileSource(
            name=f"{fv_name}_source",
            path=os.path.join(repo, f"{fv_name}.parquet"),
            timestamp_field="event_timestamp",
        )
        ttl = parse_ttl(v.get("ttl")) if req.get("use_view_ttl") else timedelta(0)
        views.append(
            FeatureView(
                name=fv_name,
                entities=[entities[ent_name]],
                ttl=ttl,
                schema=[Field(name=f["name"], dtype=feast_type(f["type"])) for f in v["fields"]],
                source=source,
                online=True,
            )
        )
    store.apply([*entities.values(), *views])
    return store, entities, views


def json_value(v):
    """(JSON-safe value, type label) for one to_dict() value."""
    if v is None:
        return None, None
    if isinstance(v, bool):
        return v, "bool"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN", "float"
        if math.isinf(v):
            return ("Infinity" if v > 0 else "-Infinity"), "float"
        return v, "float"
    if isinstance(v, (bytes, bytearray)):
        return {"bytes_b64": base64.b64encode(bytes(v)).decode()}, "bytes"
    if isinstance(v, datetime):
        return v.isoformat(), "datetime"
    if isinstance(v, (list, tuple)):
        pairs = [json_value(x) for x in v]
        elem_types = sorted({t or "None" for _, t in pairs})
        return [x for x, _ in pairs], f"list[{'|'.join(elem_types)}]"
    if isinstance(v, (int, str)):
        return v, type(v).__name__
    # Anything else (numpy scalars, Decimal, UUID...) would be a surprise worth seeing.
    return str(v), type(v).__name__


def iso_ts(ts) -> str:
    base = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=ts.seconds)
    return base.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts.nanos:09d}Z"


def main():
    req = load_request()
    real_stdout = sys.stdout
    # Feast prints progress during apply; stdout must carry only the answer.
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(
        prefix="feast_read_"
    ) as repo:
        store, entities, views = build_store(req, repo)

        if req.get("features"):
            features = list(req["features"])
        else:
            features = [f"{fv.name}:{f.name}" for fv in views for f in fv.features]

        join_keys = list(entities)
        rows = []
        for e in req["entities"]:
            rows.append(dict(e) if isinstance(e, dict) else {k: e for k in join_keys})

        resp = store.get_online_features(
            features=features,
            entity_rows=rows,
            full_feature_names=bool(req.get("full_feature_names", False)),
        )
        as_dict = resp.to_dict()

        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        out = {k: None for k in RESERVED}
        types, kinds, statuses, stamps = {}, {}, {}, {}
        protos = dict(zip(resp.proto.metadata.feature_names.val, resp.proto.results))
        for name, values in as_dict.items():
            if name in RESERVED:
                fail(f"feature {name!r} collides with a reserved output key")
            encoded = [json_value(v) for v in values]
            out[name] = [x for x, _ in encoded]
            types[name] = [t for _, t in encoded]
            vec = protos.get(name)
            if vec is not None:
                kinds[name] = [v.WhichOneof("val") for v in vec.values]
                statuses[name] = [FieldStatus.Name(s) for s in vec.statuses]
                stamps[name] = [iso_ts(t) for t in vec.event_timestamps]
        out.update(types=types, kinds=kinds, statuses=statuses, event_timestamps=stamps)
    json.dump(out, real_stdout, allow_nan=False, sort_keys=True)
    real_stdout.write("\n")


if __name__ == "__main__":
    os.environ.setdefault("FEAST_USAGE", "False")
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
