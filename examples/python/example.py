#!/usr/bin/env python3
"""oms-gateway from Python (grpcio): a cash-in from location to completed, and the rich errors.

    python example.py [--addr 127.0.0.1:50051]

1. ListCashLocations: a Greendot location near a point.
2. CreateCashIn with an idempotency key (retrying with the same key never creates a second one).
3. WatchCashIn, and while it watches, SandboxService.SimulateDeposit (embedded sandbox only):
   the stream reports the change and ends OK at the terminal state; the final amounts are printed.
4. Errors: the google.rpc.Status in the `grpc-status-details-bin` trailer, decoded by hand —
   BadRequest (a deliberately invalid create), ResourceInfo (an unknown id), ErrorInfo (always
   exactly one), RetryInfo (when retrying may help: how long to wait).

The stubs are generated from ../../proto into ./gen with grpcio-tools each run (no generated code
is committed). The deposit code is a bearer instrument, so it is never printed.
"""

import argparse
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
GEN = os.path.join(HERE, "gen")

# Every call has a deadline: the gateway bounds its upstream work by it.
TIMEOUT = 15.0


def generate_stubs():
    """python -m grpc_tools.protoc over proto/ into ./gen (the google/protobuf imports come with
    grpcio-tools)."""
    from grpc_tools import protoc
    import importlib.resources

    os.makedirs(GEN, exist_ok=True)
    files = sorted(
        os.path.relpath(os.path.join(d, f), PROTO)
        for d, _, fs in os.walk(PROTO)
        for f in fs
        if f.endswith(".proto")
    )
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={GEN}", f"--grpc_python_out={GEN}"]
    if protoc.main(args + files) != 0:
        sys.exit(f"protoc failed on {files}")
    sys.path.insert(0, GEN)


generate_stubs()

import grpc  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402 (googleapis-common-protos)
from polygon.oms.v1 import cash_in_pb2, cash_in_pb2_grpc  # noqa: E402
from polygon.oms.v1 import cash_location_pb2, cash_location_pb2_grpc  # noqa: E402
from polygon.oms.v1 import sandbox_pb2, sandbox_pb2_grpc  # noqa: E402


def status_name(value):
    return cash_in_pb2.CashInStatus.Name(value)


def print_amounts(ci):
    print(f"  status           {status_name(ci.status)}")
    print(f"  deposited        {ci.source.amount} {ci.source.asset.upper()}")
    print(f"  fees deducted    {ci.source.fees_deducted.total}")
    print(f"  delivered (net)  {ci.destination.amount_net} {ci.destination.asset.upper()}")
    print(f"  transaction      {ci.transaction_id}")


# === the rich error details ===


def rich_status(err):
    """The google.rpc.Status the gateway puts in the `grpc-status-details-bin` trailer, or None."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def print_error(label, err):
    """Prints a failed call the way a caller should read it: code, message, then each detail."""
    print(f"{label}: {err.code().name}: {err.details()}")
    status = rich_status(err)
    if status is None:
        print("  (no grpc-status-details-bin trailer)")
        return
    for any_detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ResourceInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                detail = kind()
                any_detail.Unpack(detail)
                print_detail(detail)
                break
        else:
            print(f"  {any_detail.type_url}")


def print_detail(d):
    if isinstance(d, error_details_pb2.ErrorInfo):
        meta = ", ".join(f"{k}={v}" for k, v in sorted(d.metadata.items()))
        print(f"  ErrorInfo reason={d.reason} domain={d.domain} {meta}".rstrip())
    elif isinstance(d, error_details_pb2.BadRequest):
        for v in d.field_violations:
            print(f"  BadRequest {v.field}: {v.description}")
    elif isinstance(d, error_details_pb2.RetryInfo):
        delay = d.retry_delay.seconds + d.retry_delay.nanos / 1e9
        print(f"  RetryInfo retry_delay={delay:g}s (wait this long before retrying; a write with the same key)")
    elif isinstance(d, error_details_pb2.ResourceInfo):
        print(f"  ResourceInfo {d.resource_type} {d.resource_name}: {d.description}")


# === the flow ===


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default=os.environ.get("OMS_GATEWAY_ADDR", "127.0.0.1:50051"))
    p.add_argument(
        "--outage-id",
        default="ci_outage_demo",
        help="a cash-in id to GetCashIn last: NOT_FOUND, or, against a gateway started with "
        "--sandbox-faults '503=1,paths=/cash-ins/ci_outage', UNAVAILABLE with RetryInfo",
    )
    args = p.parse_args()

    with grpc.insecure_channel(args.addr) as channel:
        locations = cash_location_pb2_grpc.CashLocationServiceStub(channel)
        cash_ins = cash_in_pb2_grpc.CashInServiceStub(channel)
        sandbox = sandbox_pb2_grpc.SandboxServiceStub(channel)

        # 1. Where can the customer pay?
        found = locations.ListCashLocations(
            cash_location_pb2.ListCashLocationsRequest(
                provider="greendot", latitude=38.495133, longitude=-121.505336
            ),
            timeout=TIMEOUT,
        )
        loc = found.cash_locations[0]
        print(f"location: {loc.id} {loc.name}, {loc.city}")

        # 2. A $200 cash-in with developer fees of 1% + $1.00. The key is what makes retries safe:
        #    a real caller derives it from its own order id; this example makes one per run.
        key = f"example-py-{uuid.uuid4()}"
        R = cash_in_pb2.CreateCashInRequest
        created = cash_ins.CreateCashIn(
            R(
                customer_id="cst_example_py",
                source=R.Source(asset="usd", indicated_amount="200.00"),
                destination=R.Destination(
                    asset="usdc", network="polygon", wallet=R.Wallet(wallet="wlt_example_py")
                ),
                cash=R.Cash(cash_location_id=loc.id, cash_location_reference=loc.loc_reference),
                developer_fees=[
                    R.DeveloperFee(percentage="0.01", wallet="wlt_fee_py"),
                    R.DeveloperFee(flat_fee="1.00", wallet="wlt_fee_py"),
                ],
                idempotency_key=key,  # or the `idempotency-key` call metadata
            ),
            timeout=TIMEOUT,
        ).cash_in
        print(f"created: {created.id} {status_name(created.status)} (idempotency key {key})")
        print(f"  deposit code issued, expires at {created.deposit_instructions.expires_at.ToJsonString()}")

        # 3. Watch it; once the stream has sent the current state, the customer pays at the counter.
        stream = cash_ins.WatchCashIn(
            cash_in_pb2.WatchCashInRequest(cash_in_id=created.id), timeout=60
        )
        last = None
        for event in stream:
            kind = cash_in_pb2.CashInEventType.Name(event.type)
            if event.type == cash_in_pb2.CASH_IN_EVENT_TYPE_HEARTBEAT:
                print(f"watch: {kind}")
                continue
            last = event.cash_in
            changed = f" changed {', '.join(event.changed_fields)}" if event.changed_fields else ""
            print(f"watch: {kind} {status_name(last.status)}{changed}")
            if event.type == cash_in_pb2.CASH_IN_EVENT_TYPE_INITIAL:
                sandbox.SimulateDeposit(
                    sandbox_pb2.SimulateDepositRequest(cash_in_id=created.id, amount="200.00"),
                    timeout=TIMEOUT,
                )
                print("sandbox: deposit of 200.00 simulated")
        # The loop ends when the stream ends: OK right after a terminal status (an error raises).
        print(f"watch: ended {stream.code().name}")
        print("final:")
        print_amounts(last)

        # 4. Errors, as a caller reads them.
        try:
            cash_ins.CreateCashIn(
                R(customer_id="bad", source=R.Source(asset="usd", indicated_amount="5")),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as err:
            print_error("invalid create", err)
        try:
            cash_ins.GetCashIn(cash_in_pb2.GetCashInRequest(cash_in_id="ci_unknown"), timeout=TIMEOUT)
        except grpc.RpcError as err:
            print_error("unknown cash-in", err)
        try:
            cash_ins.GetCashIn(cash_in_pb2.GetCashInRequest(cash_in_id=args.outage_id), timeout=TIMEOUT)
        except grpc.RpcError as err:
            print_error(f"GetCashIn {args.outage_id}", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
