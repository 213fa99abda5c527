"""Writes the watch rows' template: the unary fixture (a recorded CashIn) with its id replaced by
`@ID@` and `destination.amountNet` by `@NET@`, which the watch client fills in per cash-in and
per round of changes.

usage: watch_template.py FIXTURE OUT_DIR
"""
import json
import sys

fixture, out = sys.argv[1], sys.argv[2]
with open(fixture) as f:
    cash_in = json.load(f)
assert cash_in["status"] == "pending", "the watch rows need a cash-in that is not terminal"
cash_in["id"] = "@ID@"
cash_in["destination"]["amountNet"] = "@NET@"
with open(f"{out}/template.json", "w") as f:
    f.write(json.dumps(cash_in, separators=(",", ":")))
