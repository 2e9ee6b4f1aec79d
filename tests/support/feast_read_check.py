"""Proves feast_read.py reads our layout, and re-checks the Feast facts FEAST_NOTES.md relies on.

Usage: $(scripts/python-env.sh feast) tests/support/feast_read_check.py
Needs `redis-server` on PATH; starts a throwaway one on a free port and stops it.
Prints "ok" and exits 0, or fails with an AssertionError.

The bytes written to Redis are the GOLDEN table of src/profiles/feast.rs, which
`cargo test --lib profiles::feast` proves the Rust encoders produce; so this reads
the daemon's encoding back through `get_online_features`.
"""

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import redis

from feast.infra.online_stores.helpers import _mmh3

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROJECT = "my_project"  # the project baked into the golden `key_*` entries


def golden() -> dict:
    src = open(os.path.join(ROOT, "src/profiles/feast.rs")).read()
    table = src[src.index("const GOLDEN") :]
    table = table[: table.index("];")]
    return {n: bytes.fromhex(h) for n, h in re.findall(r'\("([^"]+)", "([0-9a-f]*)"\)', table)}


G = golden()

TYPES = [
    "bytes", "string", "int32", "int64", "double", "float", "bool", "unix_timestamp",
    "bytes_list", "string_list", "int32_list", "int64_list", "double_list", "float_list",
    "bool_list", "unix_timestamp_list",
]  # fmt: skip
# Per type: (golden value for entity abc-123, golden value for entity ü→😀).
VALUES = {
    "bytes": ("bytes_bin", "bytes_empty"),
    "string": ("string_non_ascii", "string_empty"),
    "int32": ("int32_min", "null"),
    "int64": ("int64_max", "int64_0"),
    "double": ("double_nan", "double_inf"),
    "float": ("float_neg_inf", "float_nan"),
    "bool": ("bool_false", "bool_true"),
    "unix_timestamp": ("unix_ts_neg1", "unix_ts_nat"),
    "bytes_list": ("bytes_list", "bytes_list_empty"),
    "string_list": ("string_list", "string_list_empty"),
    "int32_list": ("int32_list", "int32_list_empty"),
    "int64_list": ("int64_list", "int64_list_empty"),
    "double_list": ("double_list", "double_list_empty"),
    "float_list": ("float_list", "float_list_empty"),
    "bool_list": ("bool_list", "bool_list_empty"),
    "unix_timestamp_list": ("unix_ts_list", "unix_ts_list_empty"),
}
B64_00FF80, B64_00FF = "AP+A", "AP8="
EXPECTED = {
    # feature: ([abc-123 value, ü→😀 value, missing entity], [Python type of each])
    "bytes": ([{"bytes_b64": B64_00FF80}, {"bytes_b64": ""}, None], ["bytes", "bytes", None]),
    "string": (["ü→😀", "", None], ["str", "str", None]),
    "int32": ([-(2**31), None, None], ["int", None, None]),
    "int64": ([2**63 - 1, 0, None], ["int", "int", None]),
    "double": (["NaN", "Infinity", None], ["float", "float", None]),
    "float": (["-Infinity", "NaN", None], ["float", "float", None]),
    "bool": ([False, True, None], ["bool", "bool", None]),
    "unix_timestamp": (["1969-12-31T23:59:59+00:00", None, None], ["datetime", None, None]),
    "bytes_list": ([[{"bytes_b64": ""}, {"bytes_b64": B64_00FF}], [], None], ["list[bytes]", "list[]", None]),
    "string_list": ([["a", "", "ü😀"], [], None], ["list[str]", "list[]", None]),
    "int32_list": ([[0, 1, -1, -(2**31), 2**31 - 1], [], None], ["list[int]", "list[]", None]),
    "int64_list": ([[0, -1, -(2**63), 2**63 - 1], [], None], ["list[int]", "list[]", None]),
    "double_list": ([[1.5, "NaN", "Infinity", "-Infinity", -0.0], [], None], ["list[float]", "list[]", None]),
    "float_list": ([[1.5, "NaN", "Infinity", "-Infinity"], [], None], ["list[float]", "list[]", None]),
    "bool_list": ([[True, False, True], [], None], ["list[bool]", "list[]", None]),
    "unix_timestamp_list": (
        [["2023-11-14T22:13:20+00:00", "1969-12-31T23:59:59+00:00", "1970-01-01T00:00:00+00:00"], [], None],
        ["list[datetime]", "list[]", None],
    ),
}  # fmt: skip
KINDS_ABC = {t: ("unix_timestamp_val" if t == "unix_timestamp" else f"{t}_val") for t in TYPES}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            return proc, port, r
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def feast_read(req: dict) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "feast_read.py")],
        input=json.dumps(req),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def view(name, fields, ttl=None):
    v = {"name": name, "version": 1, "entity": {"name": "domain_userid"}, "fields": fields}
    if ttl:
        v["ttl"] = ttl
    return v


def check_reads(r, port):
    key_abc, key_uni = G["key_abc"], G["key_non_ascii"]
    fv = "all_types_v1"
    for key, idx in ((key_abc, 0), (key_uni, 1)):
        mapping = {_mmh3(f"{fv}:{t}"): G[VALUES[t][idx]] for t in TYPES}
        mapping[b"_ts:" + fv.encode()] = G["ts_nanos"]
        r.hset(key, mapping=mapping)
    # A second view in the same hash, stamped long ago, with a 1-second ttl.
    r.hset(key_abc, mapping={_mmh3("stale_v1:n"): G["int64_300"], "_ts:stale_v1": G["ts_pre1970_whole"]})

    views = [
        view("all_types", [{"name": t, "type": t} for t in TYPES]),
        view("stale", [{"name": "n", "type": "int64"}], ttl="PT1S"),
    ]
    got = feast_read(
        {
            "redis": f"127.0.0.1:{port}",
            "project": PROJECT,
            "views": views,
            "entities": ["abc-123", "ü→😀", "nope"],
            "use_view_ttl": True,
        }
    )
    for t, (values, types) in EXPECTED.items():
        assert got[t] == values, (t, got[t], values)
        assert got["types"][t] == types, (t, got["types"][t], types)
        assert got["kinds"][t][0] == KINDS_ABC[t], (t, got["kinds"][t])
    # -0.0 survives JSON; check the sign, since == ignores it.
    assert math.copysign(1, got["double_list"][0][4]) == -1
    # An int32 field holding an int32_val, an int64 field an int64_val: kinds tell them apart.
    assert got["kinds"]["int64"] == ["int64_val", "int64_val", None]
    # Our ns timestamp comes back rounded to µs through a float; a missing entity reads epoch.
    assert got["event_timestamps"]["int32"] == [
        "2023-11-14T22:13:20.123457000Z",
        "2023-11-14T22:13:20.123457000Z",
        "1970-01-01T00:00:00.000000000Z",
    ], got["event_timestamps"]["int32"]
    # The Redis store never reports NOT_FOUND: a missing entity is PRESENT with nulls.
    assert set(got["statuses"]["int32"]) == {"PRESENT"}, got["statuses"]["int32"]
    # ttl is not applied on online reads: a value stamped 1969 with ttl 1 s is returned.
    assert got["n"] == [300, None, None], got["n"]
    assert got["statuses"]["n"][0] == "PRESENT"
    assert got["domain_userid"] == ["abc-123", "ü→😀", "nope"]

    # Features subset, full names, URL form of the address.
    got = feast_read(
        {
            "redis": f"redis://127.0.0.1:{port}/0",
            "project": PROJECT,
            "views": views,
            "entities": [{"domain_userid": "abc-123"}],
            "features": ["all_types_v1:int32", "stale_v1:n"],
            "full_feature_names": True,
        }
    )
    assert got["all_types_v1__int32"] == [-(2**31)] and got["stale_v1__n"] == [300], got
    assert "all_types_v1__int64" not in got


def check_feast_writer(r, port):
    """Feast's own writer: bytes equal ours, equal/older timestamps skipped, key_ttl_seconds."""
    from feast import Entity, FeatureView, Field, FileSource, RepoConfig
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.types import Int32, String
    from feast.value_type import ValueType

    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry="/nonexistent/registry.db",
        online_store={"type": "redis", "connection_string": f"127.0.0.1:{port}", "key_ttl_seconds": 3600},
        entity_key_serialization_version=3,
    )
    ent = Entity(name="domain_userid", join_keys=["domain_userid"], value_type=ValueType.STRING)
    fv = FeatureView(
        name="ecommerce_v1",
        entities=[ent],
        schema=[Field(name="TOTAL_TRANSACTIONS", dtype=Int32), Field(name="S", dtype=String)],
        source=FileSource(path="/nonexistent.parquet", timestamp_field="ts"),
    )
    store = RedisOnlineStore()
    ek = EntityKey(join_keys=["domain_userid"], entity_values=[Value(string_val="abc-123")])
    key = G["key_abc"]
    r.delete(key)
    f_tt, f_s = G["field_simple"], _mmh3("ecommerce_v1:S")
    t0 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)

    def write(ts, n, s):
        vals = {"TOTAL_TRANSACTIONS": Value(int32_val=n), "S": Value(string_val=s) if s is not None else Value()}
        store.online_write_batch(config, fv, [(ek, vals, ts, None)], None)

    write(t0, -1, None)
    h = r.hgetall(key)
    assert h == {f_tt: G["int32_neg1"], f_s: G["null"], b"_ts:ecommerce_v1": G["ts_whole"]}, h
    assert 3590 < r.ttl(key) <= 3600, r.ttl(key)  # EXPIRE on the whole entity hash
    write(t0, 1, "equal")  # same instant: skipped
    write(t0 - timedelta(seconds=1), 2, "older")  # older: skipped
    assert r.hget(key, f_tt) == G["int32_neg1"]
    write(t0 + timedelta(microseconds=1), 300, "newer")
    assert r.hget(key, f_tt) == G["int32_300"]


def check_unix_timestamp_range():
    """The range constants in feast.rs are exactly what Feast's reader accepts."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type as to_py

    src = open(os.path.join(ROOT, "src/profiles/feast.rs")).read()
    lo, hi = (
        int(re.search(rf"const UNIX_TIMESTAMP_{w}_SECONDS: i64 = (-?[0-9_]+);", src).group(1))
        for w in ("MIN", "MAX")
    )
    for ok in (lo, hi):
        assert to_py(Value(unix_timestamp_val=ok)) is not None
    for bad in (lo - 1, hi + 1):
        try:
            to_py(Value(unix_timestamp_val=bad))
        except (ValueError, OSError, OverflowError):
            continue
        raise AssertionError(f"Feast read {bad} back without error")


def main():
    check_unix_timestamp_range()
    proc, port, r = start_redis()
    try:
        check_reads(r, port)
        check_feast_writer(r, port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print("ok")


if __name__ == "__main__":
    main()
