#!/bin/sh
# Registers the custom search attributes Sluice's workflows set, so streams are
# findable in the Temporal UI (src/domain/searchAttributes.ts lists them). Run once by the `temporal-setup` compose service
# (temporalio/admin-tools image); safe to run again: the attributes already
# existing with the same type is success, with another type is a failure.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
ATTRIBUTES="SluiceKind SluicePayer SluicePayee SluiceStatus SluiceEntity"
# SQL visibility keeps the attribute mapping in the namespace record; server
# nodes pick it up on their namespace-cache refresh (10s by default).
SETTLE_SECONDS="${SLUICE_SEARCH_ATTRIBUTES_SETTLE_SECONDS:-12}"

echo "waiting for namespace ${NAMESPACE} on ${ADDRESS}"
tries=0
until temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 90 ]; then
    echo "namespace ${NAMESPACE} did not appear on ${ADDRESS} after ${tries} tries" >&2
    exit 1
  fi
  sleep 2
done

# One --type per --name: the CLI pairs them by position.
if ! temporal operator search-attribute create --address "$ADDRESS" --namespace "$NAMESPACE" \
  --name SluiceKind --type Keyword \
  --name SluicePayer --type Keyword \
  --name SluicePayee --type Keyword \
  --name SluiceStatus --type Keyword \
  --name SluiceEntity --type Keyword; then
  echo "create reported an error (e.g. already exists); checking what is registered"
fi

# The outcome that matters: each attribute is registered, as a Keyword.
listing="$(temporal operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE")"
missing=0
for name in $ATTRIBUTES; do
  if printf '%s\n' "$listing" | grep -Eq "^[[:space:]]*${name}[[:space:]]+Keyword[[:space:]]*$"; then
    echo "search attribute ${name}: Keyword"
  else
    echo "search attribute ${name} is missing or not a Keyword" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1

sleep "$SETTLE_SECONDS"
echo "search attributes ready on namespace ${NAMESPACE}"
