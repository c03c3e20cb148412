#!/usr/bin/env python3
"""Signs test cases with the official Alibaba Cloud Python SDK (aliyun-python-sdk-core).

Reads a JSON object from stdin:
  {"compose": [{"method", "secret", "params": {name: value}}...],
   "full":    [{"method", "ak", "secret", "query": {...}, "body": {...},
                "timestamp", "nonce"}...]}
and writes {"compose": [{"string_to_sign", "signature"}...],
            "full": [{"url", "string_to_sign"}...]} to stdout.

"compose" calls the SDK's own compose/sign functions on exactly the given parameters;
"full" goes through get_signed_url (which adds the common parameters, including the empty
SignatureType) with the timestamp and nonce patched to the given values.
"""
import json
import sys

from aliyunsdkcore.auth.composer import rpc_signature_composer as composer
from aliyunsdkcore.utils import parameter_helper as helper

compose_sts = getattr(composer, "__compose_string_to_sign")
get_signature = getattr(composer, "__get_signature")


def main():
    cases = json.load(sys.stdin)
    out = {"compose": [], "full": []}
    for case in cases.get("compose", []):
        sts = compose_sts(case["method"], dict(case["params"]))
        out["compose"].append(
            {"string_to_sign": sts, "signature": get_signature(sts, case["secret"])}
        )
    for case in cases.get("full", []):
        helper.get_iso_8061_date = lambda ts=case["timestamp"]: ts
        helper.get_uuid = lambda n=case["nonce"]: n
        url, sts = composer.get_signed_url(
            dict(case["query"]),
            case["ak"],
            case["secret"],
            "JSON",
            case["method"],
            dict(case["body"]),
        )
        out["full"].append({"url": url, "string_to_sign": sts})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
