#!/usr/bin/env python3
"""Drives ecs-sim with the official Alibaba Cloud Python SDK, unchanged.

Usage: sdk_client.py HOST:PORT ACCESS_KEY_ID SECRET [STS_ID STS_SECRET STS_TOKEN]

Prints one JSON object describing what happened: the results of real SDK calls (AcsClient +
CommonRequest, GET and POST, query and form-body parameters, static and STS credentials),
and the simulator's answers to tampered, replayed, unsigned and mis-keyed requests.
"""
import json
import sys
import urllib.error
import urllib.request

from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.auth.composer import rpc_signature_composer as composer
from aliyunsdkcore.auth.credentials import StsTokenCredential
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

REGION = "cn-hangzhou"
INSTANCE = "i-sim0000000000000001"
VSWITCH = "vsw-sim0000000000000001"
SG = "sg-sim0000000000000001"


def request(host, action, version="2014-05-26", method="POST", query=None, body=None):
    req = CommonRequest(domain=host, version=version, action_name=action)
    req.set_protocol_type("http")
    req.set_method(method)
    req.set_accept_format("json")
    for k, v in (query or {}).items():
        req.add_query_param(k, v)
    for k, v in (body or {}).items():
        req.add_body_params(k, v)
    return req


def call(client, req):
    try:
        return {"ok": json.loads(client.do_action_with_exception(req))}
    except ServerException as e:
        return {"error": e.get_error_code(), "status": e.get_http_status(),
                "request_id": e.get_request_id()}


def raw(host, path):
    try:
        with urllib.request.urlopen("http://" + host + path, timeout=10) as r:
            return {"status": r.status, "body": json.loads(r.read())}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": json.loads(e.read())}


def signed_path(ak, secret, params):
    url, _ = composer.get_signed_url(dict(params), ak, secret, "JSON", "GET", {})
    return url


def main():
    host, ak, secret = sys.argv[1:4]
    out = {}
    client = AcsClient(ak, secret, REGION, auto_retry=False)

    out["types"] = call(client, request(host, "DescribeInstanceTypes", method="GET",
                                        query={"InstanceTypes.1": "ecs.g7.large"}))
    out["vswitches"] = call(client, request(host, "DescribeVSwitches", version="2016-04-28",
                                            query={"VSwitchId": VSWITCH}))
    # Business parameters in the form body, signed together with the query (vector D style).
    created = call(client, request(host, "CreateNetworkInterface", body={
        "VSwitchId": VSWITCH, "SecurityGroupIds.1": SG,
        "SecondaryPrivateIpAddressCount": "2",
        "Tag.1.Key": "made-by", "Tag.1.Value": "python sdk * ~ ( ) '",
        "Description": "caf\u00e9 + space", "ClientToken": "py-token-1"}))
    out["create"] = created
    eni = created.get("ok", {}).get("NetworkInterfaceId")
    out["create_again"] = call(client, request(host, "CreateNetworkInterface", body={
        "VSwitchId": VSWITCH, "SecurityGroupIds.1": SG,
        "SecondaryPrivateIpAddressCount": "2",
        "Tag.1.Key": "made-by", "Tag.1.Value": "python sdk * ~ ( ) '",
        "Description": "caf\u00e9 + space", "ClientToken": "py-token-1"}))
    out["attach"] = call(client, request(host, "AttachNetworkInterface",
                                         query={"NetworkInterfaceId": eni, "InstanceId": INSTANCE}))
    out["assign"] = call(client, request(host, "AssignPrivateIpAddresses",
                                         query={"NetworkInterfaceId": eni,
                                                "SecondaryPrivateIpAddressCount": "3"}))
    assigned = out["assign"].get("ok", {}).get("AssignedPrivateIpAddressesSet", {}) \
        .get("PrivateIpSet", {}).get("PrivateIpAddress", [])
    out["unassign"] = call(client, request(host, "UnassignPrivateIpAddresses", body={
        "NetworkInterfaceId": eni, "PrivateIpAddress.1": assigned[0] if assigned else "0.0.0.0"}))
    out["describe"] = call(client, request(host, "DescribeNetworkInterfaces", method="GET",
                                           query={"NetworkInterfaceId.1": eni, "MaxResults": "10"}))
    out["not_found"] = call(client, request(host, "DeleteNetworkInterface",
                                            query={"NetworkInterfaceId": "eni-doesnotexist"}))

    if len(sys.argv) >= 7:
        sts_id, sts_secret, sts_token = sys.argv[4:7]
        sts = AcsClient(region_id=REGION, credential=StsTokenCredential(sts_id, sts_secret, sts_token),
                        auto_retry=False)
        out["sts_describe"] = call(sts, request(host, "DescribeNetworkInterfaces",
                                                query={"InstanceId": INSTANCE}))
        bad = AcsClient(region_id=REGION,
                        credential=StsTokenCredential(sts_id, sts_secret, sts_token + "x"),
                        auto_retry=False)
        out["sts_wrong_token"] = call(bad, request(host, "DescribeNetworkInterfaces"))

    base = {"Action": "DescribeNetworkInterfaces", "Version": "2014-05-26",
            "RegionId": REGION, "InstanceId": INSTANCE}
    path = signed_path(ak, secret, base)
    out["raw_ok"] = raw(host, path)
    out["raw_replayed"] = raw(host, path)
    tampered = signed_path(ak, secret, base).replace("InstanceId=i-sim", "InstanceId=i-evil")
    out["raw_tampered"] = raw(host, tampered)
    unsigned = "&".join(p for p in signed_path(ak, secret, base).split("&")
                        if not p.startswith("Signature="))
    out["raw_unsigned"] = raw(host, unsigned)
    no_ts = "&".join(p for p in signed_path(ak, secret, base).split("&")
                     if not p.startswith("Timestamp="))
    out["raw_no_timestamp"] = raw(host, no_ts)
    out["raw_wrong_secret"] = raw(host, signed_path(ak, secret + "x", base))
    out["raw_unknown_key"] = raw(host, signed_path("LTAInobody", secret, base))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
