"""Drives the daemon's HTTP API with the real Snowplow Signals SDK (0.1.5).

Usage: python signals_sdk.py API_URL TOKEN COMMAND [ARGS...]; prints one JSON
object on stdout. The SDK fetches a JWT from Snowplow's console on first use;
offline we hand it TOKEN (a JWT, whose signature the SDK never checks) by
setting `sp.api_client.token`, as the README's HTTP API section describes. Every HTTP call the SDK makes is recorded
(method, path, status) by wrapping httpx.request, which the SDK calls directly.

Commands:
  apply VIEW_JSON       build the view with the SDK's classes, sp.apply([view])
  get_view NAME         sp.get_view(NAME)
  attributes NAME VERSION ENTITY ID ATTR...   sp.get_view_attributes(...)
  apply_invalid KIND    apply a view the server must refuse (KIND: bad_type,
                        no_timestamp_field); reports the SDK's error
"""

import json
import sys

import httpx

from snowplow_signals import BatchSource, Field, Signals, View, domain_userid
from snowplow_signals.api_client import SignalsAPIError
from snowplow_signals.models.model import FieldModel

CALLS = []
_request = httpx.request


def recording_request(method, url, **kwargs):
    response = _request(method, url, **kwargs)
    CALLS.append([method, httpx.URL(url).path, response.status_code])
    return response


httpx.request = recording_request


def signals(api_url, token):
    sp = Signals(api_url=api_url, api_key="unused", api_key_id="unused", org_id="unused")
    sp.api_client.token = token
    return sp


def view_from(doc):
    bs = doc["batch_source"]
    return View(
        name=doc["name"],
        version=doc.get("version", 1),
        entity=domain_userid,
        owner=doc["owner"],
        online=doc.get("online", True),
        offline=doc.get("offline", True),
        batch_source=BatchSource(
            name=bs["name"],
            database=bs["database"],
            schema=bs["schema"],
            table=bs["table"],
            timestamp_field=bs["timestamp_field"],
            owner=bs.get("owner"),
        ),
        fields=[Field(name=f["name"], type=f["type"]) for f in doc["fields"]],
    )


def main():
    api_url, token, command, *args = sys.argv[1:]
    sp = signals(api_url, token)
    out = {}
    try:
        if command == "apply":
            with open(args[0]) as f:
                doc = json.load(f)
            applied = sp.apply([view_from(doc)])
            out["applied"] = [a.model_dump(mode="json", exclude_none=True) for a in applied]
        elif command == "get_view":
            out["view"] = sp.get_view(args[0]).model_dump(mode="json")
        elif command == "attributes":
            name, version, entity, identifier, *attrs = args
            out["attributes"] = sp.get_view_attributes(
                name=name,
                version=int(version),
                attributes=attrs,
                entity=entity,
                identifier=identifier,
            )
        elif command == "apply_invalid":
            with open(args[1]) as f:
                doc = json.load(f)
            view = view_from(doc)
            if args[0] == "bad_type":
                # The SDK checks types itself; model_construct skips that, so the
                # server's own check is what answers.
                view.fields = [FieldModel.model_construct(name="TOTAL_TRANSACTIONS", type="int128")]
            elif args[0] == "no_timestamp_field":
                view.batch_source.timestamp_field = None
            sp.apply([view])
            out["applied"] = True
        else:
            raise SystemExit(f"unknown command {command}")
    except SignalsAPIError as e:
        out["error"] = {"status": e.status_code, "message": e.message}
    out["calls"] = CALLS
    print(json.dumps(out))


if __name__ == "__main__":
    main()
