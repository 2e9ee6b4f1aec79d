"""Drives the daemon's HTTP API with the Signals SDK 0.4.x in sandbox mode.

Usage: python signals_sdk04.py API_URL TOKEN COMMAND VIEW_JSON [ARGS...];
prints one JSON object. `SignalsSandbox` sends TOKEN as a plain bearer token.
The seed view document becomes an `ExternalBatchAttributeGroup` (0.4.x's
name for a view read from a warehouse table). HTTP calls are recorded as in
signals_sdk.py.

Commands: publish | get | attributes ID ATTR... | unpublish | delete
"""

import json
import sys

import httpx

from snowplow_signals import (
    BatchSource,
    ExternalBatchAttributeGroup,
    Field,
    SignalsSandbox,
    domain_userid,
)
from snowplow_signals.api_client import SignalsAPIError

CALLS = []
_request = httpx.request


def recording_request(method, url, **kwargs):
    response = _request(method, url, **kwargs)
    CALLS.append([method, httpx.URL(url).path, response.status_code])
    return response


httpx.request = recording_request


def group_from(doc):
    bs = doc["batch_source"]
    return ExternalBatchAttributeGroup(
        name=doc["name"],
        version=doc.get("version", 1),
        attribute_key=domain_userid,
        owner=doc["owner"],
        batch_source=BatchSource(
            name=bs["name"],
            database=bs["database"],
            schema=bs["schema"],
            table=bs["table"],
            timestamp_field=bs["timestamp_field"],
        ),
        fields=[Field(name=f["name"], type=f["type"]) for f in doc["fields"]],
    )


def main():
    api_url, token, command, view_file, *args = sys.argv[1:]
    with open(view_file) as f:
        group = group_from(json.load(f))
    sp = SignalsSandbox(api_url=api_url, sandbox_token=token)
    out = {}
    try:
        if command == "publish":
            out["result"] = [
                o.model_dump(mode="json", exclude_none=True) for o in sp.publish([group])
            ]
        elif command == "get":
            out["result"] = sp.get_attribute_group(group.name).model_dump(
                mode="json", exclude_none=True
            )
        elif command == "attributes":
            identifier, *attrs = args
            out["result"] = sp.get_group_attributes(
                name=group.name,
                version=group.version,
                attributes=attrs,
                attribute_key="domain_userid",
                identifier=identifier,
            )
        elif command == "unpublish":
            out["result"] = [
                o.model_dump(mode="json", exclude_none=True) for o in sp.unpublish([group])
            ]
        elif command == "delete":
            sp.delete([group])
            out["result"] = "deleted"
        else:
            raise SystemExit(f"unknown command {command}")
    except SignalsAPIError as e:
        out["error"] = {"status": e.status_code, "message": e.message}
    out["calls"] = CALLS
    print(json.dumps(out))


if __name__ == "__main__":
    main()
