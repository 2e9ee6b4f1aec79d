"""Golden bytes for src/profiles/feast.rs, produced by the installed Feast SDK itself.

Usage: $(scripts/python-env.sh feast) tests/support/feast_golden.py
Prints one `("name", "hex"),` line per case; the unit tests in feast.rs hold
the same names, so a Feast upgrade is checked by diffing this output against
the `GOLDEN` table there.

Everything goes through Feast's own code paths where one exists
(`serialize_entity_key`, `_redis_key`, `_mmh3`, `Timestamp.FromDatetime` as the
Redis writer uses it) and through `feast.types.Value` protobuf serialisation
for values, so the goldens move if Feast's layout moves.
"""

import math
import struct
from datetime import datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import (
    BoolList,
    BytesList,
    DoubleList,
    FloatList,
    Int32List,
    Int64List,
    StringList,
)
from feast.protos.feast.types.Value_pb2 import Value as V
from feast.type_map import NULL_TIMESTAMP_INT_VALUE

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
NAN, INF = float("nan"), float("inf")

cases = []


def case(name, data: bytes):
    cases.append((name, data.hex()))


def ek(value: str) -> EntityKey:
    return EntityKey(join_keys=["domain_userid"], entity_values=[V(string_val=value)])


# Entity keys: the serialized key alone and the full Redis key (key + project).
for name, value in [("abc", "abc-123"), ("empty", ""), ("non_ascii", "ü→😀")]:
    case(f"ek_{name}", serialize_entity_key(ek(value), entity_key_serialization_version=3))
    case(f"key_{name}", _redis_key("my_project", ek(value), entity_key_serialization_version=3))

# Hash field names.
for name, fv, feat in [
    ("simple", "ecommerce_v1", "TOTAL_TRANSACTIONS"),
    ("short", "v_v1", "a"),
    ("non_ascii", "größe_v2", "ß→😀"),
    ("empty_feature", "fv_v1", ""),
]:
    case(f"field_{name}", _mmh3(f"{fv}:{feat}"))
for n in range(9):  # every tail length of murmur3's 4-byte blocks
    case(f"murmur_len{n}", struct.pack("<I", __import__("mmh3").hash("abcdefgh"[:n], signed=False)))


# Event timestamps, as the Redis writer produces them (FromDatetime on an aware datetime)
# and, for sub-microsecond instants a datetime cannot carry, as explicit Timestamp fields.
def ts_dt(d: datetime) -> bytes:
    t = Timestamp()
    t.FromDatetime(d)
    return t.SerializeToString()


epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
case("ts_epoch", ts_dt(epoch))
case("ts_whole", ts_dt(datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)))
case("ts_micros", ts_dt(datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)))
case("ts_pre1970_whole", ts_dt(epoch - timedelta(days=1)))
case("ts_pre1970_frac", ts_dt(epoch - timedelta(microseconds=500_000)))
case("ts_nanos", Timestamp(seconds=1_700_000_000, nanos=123_456_789).SerializeToString())
case("ts_minus_1ns", Timestamp(seconds=-1, nanos=999_999_999).SerializeToString())
case("ts_1ns", Timestamp(seconds=0, nanos=1).SerializeToString())

# Values, one per type and edge.
case("null", V().SerializeToString())
case("bytes_empty", V(bytes_val=b"").SerializeToString())
case("bytes_bin", V(bytes_val=b"\x00\xff\x80").SerializeToString())
case("string_empty", V(string_val="").SerializeToString())
case("string_abc", V(string_val="abc").SerializeToString())
case("string_non_ascii", V(string_val="ü→😀").SerializeToString())
case("string_long", V(string_val="x" * 200).SerializeToString())
for name, v in [("0", 0), ("1", 1), ("neg1", -1), ("min", I32_MIN), ("max", I32_MAX), ("300", 300)]:
    case(f"int32_{name}", V(int32_val=v).SerializeToString())
for name, v in [("0", 0), ("neg1", -1), ("min", I64_MIN), ("max", I64_MAX), ("300", 300)]:
    case(f"int64_{name}", V(int64_val=v).SerializeToString())
for name, v in [("0", 0.0), ("neg0", -0.0), ("1_5", 1.5), ("nan", NAN), ("inf", INF), ("neg_inf", -INF)]:
    case(f"double_{name}", V(double_val=v).SerializeToString())
for name, v in [("0", 0.0), ("1_5", 1.5), ("nan", NAN), ("inf", INF), ("neg_inf", -INF), ("max", 3.4028234663852886e38)]:
    case(f"float_{name}", V(float_val=v).SerializeToString())
case("bool_true", V(bool_val=True).SerializeToString())
case("bool_false", V(bool_val=False).SerializeToString())
for name, v in [("0", 0), ("2023", 1_700_000_000), ("neg1", -1), ("nat", NULL_TIMESTAMP_INT_VALUE)]:
    case(f"unix_ts_{name}", V(unix_timestamp_val=v).SerializeToString())

# Lists: empty, with edge elements.
case("bytes_list_empty", V(bytes_list_val=BytesList(val=[])).SerializeToString())
case("bytes_list", V(bytes_list_val=BytesList(val=[b"", b"\x00\xff"])).SerializeToString())
case("string_list_empty", V(string_list_val=StringList(val=[])).SerializeToString())
case("string_list", V(string_list_val=StringList(val=["a", "", "ü😀"])).SerializeToString())
case("int32_list_empty", V(int32_list_val=Int32List(val=[])).SerializeToString())
case("int32_list", V(int32_list_val=Int32List(val=[0, 1, -1, I32_MIN, I32_MAX])).SerializeToString())
case("int64_list_empty", V(int64_list_val=Int64List(val=[])).SerializeToString())
case("int64_list", V(int64_list_val=Int64List(val=[0, -1, I64_MIN, I64_MAX])).SerializeToString())
case("double_list_empty", V(double_list_val=DoubleList(val=[])).SerializeToString())
case("double_list", V(double_list_val=DoubleList(val=[1.5, NAN, INF, -INF, -0.0])).SerializeToString())
case("float_list_empty", V(float_list_val=FloatList(val=[])).SerializeToString())
case("float_list", V(float_list_val=FloatList(val=[1.5, NAN, INF, -INF])).SerializeToString())
case("bool_list_empty", V(bool_list_val=BoolList(val=[])).SerializeToString())
case("bool_list", V(bool_list_val=BoolList(val=[True, False, True])).SerializeToString())
case("unix_ts_list_empty", V(unix_timestamp_list_val=Int64List(val=[])).SerializeToString())
case("unix_ts_list", V(unix_timestamp_list_val=Int64List(val=[1_700_000_000, -1, 0])).SerializeToString())

assert math.isnan(NAN)
for name, hexed in cases:
    print(f'("{name}", "{hexed}"),')
