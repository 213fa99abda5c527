"""Real-client checks for bench/run.sh (h2load counts HTTP 200, not grpc-status).

  grpc_check.py bodies FIXTURE OUT_DIR
      writes the h2load request bodies (5-byte gRPC prefix + encoded message):
      get.bin (GetCashInRequest for the fixture's id) and create.bin (a valid CreateCashInRequest
      without idempotency_key: the load client sends a distinct `idempotency-key` header per call).
  grpc_check.py check FIXTURE GATEWAY_ADDR ENVOY_ADDR SAMPLES
      calls GetCashIn SAMPLES times through the gateway and through Envoy, and CreateCashIn a few
      times through the gateway, with grpcio; every answer must be OK and carry the fixture's id.
      Prints one line per target; exits 1 on any failure.

Needs the stubs in bench/gen/py (bench/run.sh generates them with grpcio-tools).
"""
import json
import os
import struct
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gen", "py"))

import grpc  # noqa: E402
from polygon.oms.v1 import cash_in_pb2, cash_in_pb2_grpc  # noqa: E402
from bench.omsrest.v1 import cash_in_rest_pb2, cash_in_rest_pb2_grpc  # noqa: E402


def frame(message):
    data = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


def create_request(fixture):
    R = cash_in_pb2.CreateCashInRequest
    return R(
        customer_id=fixture["customerId"],
        source=R.Source(asset="usd", indicated_amount="200.00"),
        destination=R.Destination(asset="usdc", network="polygon", wallet=R.Wallet(wallet="wlt_01H9Xb")),
        cash=R.Cash(
            cash_location_id=fixture["cash"]["locationId"],
            cash_location_reference=fixture["cash"]["locationReference"],
        ),
        sponsor_gas=False,
        developer_fees=[
            R.DeveloperFee(percentage="0.01", wallet="wlt_01H9Xf"),
            R.DeveloperFee(flat_fee="1.00", wallet="wlt_01H9Xf"),
        ],
        metadata={"order_id": "ord_789"},
    )


def bodies(fixture, out):
    with open(os.path.join(out, "get.bin"), "wb") as f:
        f.write(frame(cash_in_pb2.GetCashInRequest(cash_in_id=fixture["id"])))
    # The peer's request type encodes to the same bytes; checked here, not assumed.
    assert frame(cash_in_rest_pb2.GetCashInRequest(cash_in_id=fixture["id"])) == frame(
        cash_in_pb2.GetCashInRequest(cash_in_id=fixture["id"])
    )
    with open(os.path.join(out, "create.bin"), "wb") as f:
        f.write(frame(create_request(fixture)))


def check(fixture, gateway, envoy, samples):
    want = fixture["id"]
    failures = 0

    def tally(name, calls):
        nonlocal failures
        ok, bad = 0, []
        for call in calls:
            try:
                got = call()
                if got == want:
                    ok += 1
                else:
                    bad.append(f"id {got!r}")
            except grpc.RpcError as e:
                bad.append(f"{e.code().name}: {e.details()}")
            except AssertionError as e:
                bad.append(f"unexpected answer: {e}")
        failures += len(bad)
        first = f"; first failure: {bad[0]}" if bad else ""
        print(f"  grpc-status {name}: {ok}/{ok + len(bad)} OK with id {want}{first}")

    with grpc.insecure_channel(gateway) as gw, grpc.insecure_channel(envoy) as ev:
        gw_stub = cash_in_pb2_grpc.CashInServiceStub(gw)
        ev_stub = cash_in_rest_pb2_grpc.CashInRestServiceStub(ev)
        get = cash_in_pb2.GetCashInRequest(cash_in_id=want)

        def gw_get():
            r = gw_stub.GetCashIn(get, timeout=5)
            assert r.cash_in.status == cash_in_pb2.CASH_IN_STATUS_PENDING, r.cash_in.status
            return r.cash_in.id

        def ev_get():
            r = ev_stub.GetCashIn(cash_in_rest_pb2.GetCashInRequest(cash_in_id=want), timeout=5)
            assert r.status == fixture["status"], r.status
            return r.id

        def gw_create():
            r = gw_stub.CreateCashIn(
                create_request(fixture),
                metadata=[("idempotency-key", f"bench-check-{uuid.uuid4()}")],
                timeout=5,
            )
            return r.cash_in.id

        tally("gateway GetCashIn", [gw_get] * samples)
        tally("envoy GetCashIn", [ev_get] * samples)
        tally("gateway CreateCashIn", [gw_create] * max(1, samples // 10))
    return failures


def main():
    mode, fixture_path = sys.argv[1], sys.argv[2]
    with open(fixture_path) as f:
        fixture = json.load(f)
    if mode == "bodies":
        bodies(fixture, sys.argv[3])
    elif mode == "check":
        failures = check(fixture, sys.argv[3], sys.argv[4], int(sys.argv[5]))
        sys.exit(1 if failures else 0)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
