#!/usr/bin/env bash
# Mutation testing of the money paths with cargo-mutants: one-line changes a real bug could make
# (a condition flipped, a check removed, a return value replaced) in the code that decides
# whether a cash-in is created once, replayed or refused, each rebuilt and run against the tests
# that guard it. A mutant the tests do not catch ("missed") is a blind spot: kill it with a test,
# or argue in the closing note why it is equivalent.
#
#   bash tests/mutants/run.sh            the money paths below, bounded by MUTANTS_MINUTES (60)
#   MUTANTS_RE='is_final_outcome' bash tests/mutants/run.sh     only functions matching a regex
#   MUTANTS_LIST=1 bash tests/mutants/run.sh                      list the mutants, run nothing
#
# It installs cargo-mutants (crates.io, pinned) into .tools/ (gitignored), works in a copy of the
# tree under target/mutants-work (so the checkout is never mutated) with its own target
# directory, and writes cargo-mutants' report to target/mutants.out (missed.txt, caught.txt).
# Each mutant rebuilds incrementally and runs the library's unit tests and the `it` tests whose
# names match MUTANTS_TESTS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

version=27.1.0
tools="$root/.tools"
if ! "$tools/bin/cargo-mutants" --version 2>/dev/null | grep -q "$version"; then
  cargo install --locked --quiet --root "$tools" cargo-mutants --version "$version"
fi

# The money paths: the idempotency layer (local and Redis), the replay decision and error
# mapping, the mutation path in the service, the key sent upstream, and validation.
files=(
  src/idempotency.rs
  src/shared/idempotency.rs
  src/shared/outcome.rs
  src/error.rs
  src/service/cash_in.rs
  src/service/mod.rs
  src/validate.rs
)
tests="${MUTANTS_TESTS:-money_paths idempotency replay_decision validation errors:: rest_requests}"
minutes="${MUTANTS_MINUTES:-60}"

args=()
for f in "${files[@]}"; do args+=(--file "$f"); done
[ -n "${MUTANTS_RE:-}" ] && args+=(--re "$MUTANTS_RE")
if [ -n "${MUTANTS_LIST:-}" ]; then
  exec "$tools/bin/cargo-mutants" mutants --list "${args[@]}"
fi

work="$root/target/mutants-work"
rm -rf "$work"
mkdir -p "$work"
git ls-files -z | xargs -0 -I{} cp --parents {} "$work"
cd "$work"
# shellcheck disable=SC2086
timeout "$((minutes * 60))" "$tools/bin/cargo-mutants" mutants --in-place --no-shuffle \
  --baseline skip --timeout 300 --output "$root/target" "${args[@]}" \
  -- --lib --test it -- $tests || status=$?
echo
echo "missed (survivors):"
cat "$root/target/mutants.out/missed.txt" 2>/dev/null || true
echo "caught: $(wc -l <"$root/target/mutants.out/caught.txt" 2>/dev/null || echo 0)"
exit "${status:-0}"
