"""Reads one view's sync status with the Signals SDK 0.4.x and parses it as
the SDK's own `BatchSyncStatusResponse`.

Usage: python signals_sync_status04.py API_URL TOKEN NAME VERSION; prints one
JSON object: `parsed` (the model, dumped as JSON), `keys` (the keys the API
sent) and `model_fields` (the keys the model has), or `error` (status and
message) when the API refused, or `invalid` when the model rejected the body.

0.4.x defines the response model but no method that fetches it, so the call
goes through the SDK's own authenticated client (`api_client.make_request`),
as its other methods do.
"""

import json
import sys

import pydantic
from snowplow_signals import SignalsSandbox
from snowplow_signals.api_client import SignalsAPIError
from snowplow_signals.models.model import BatchSyncStatusResponse


def main():
    api_url, token, name, version = sys.argv[1:]
    sp = SignalsSandbox(api_url=api_url, sandbox_token=token)
    out = {}
    try:
        body = sp.api_client.make_request(
            method="GET", endpoint=f"sync/{name}/versions/{version}/status"
        )
        out["keys"] = sorted(body)
        out["model_fields"] = sorted(BatchSyncStatusResponse.model_fields)
        out["parsed"] = BatchSyncStatusResponse.model_validate(body).model_dump(
            mode="json"
        )
    except SignalsAPIError as e:
        out["error"] = {"status": e.status_code, "message": e.message}
    except pydantic.ValidationError as e:
        out["invalid"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
