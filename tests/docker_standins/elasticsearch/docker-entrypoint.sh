#!/bin/bash
# STAND-IN for the official image's entrypoint, for what the compose file uses: any other command
# runs as given; otherwise settings from the environment (lower-case dotted names, e.g.
# xpack.security.enabled) become -E options, and ELASTIC_PASSWORD becomes the keystore's
# bootstrap.password (the `elastic` user's password on a new cluster).
set -euo pipefail
if [[ $# -gt 0 && $1 != eswrapper && $1 != -* ]]; then
  exec "$@"
fi
[[ ${1:-} == eswrapper ]] && shift
options=()
while IFS= read -r -d '' entry; do
  name=${entry%%=*}
  if [[ $name =~ ^[a-z0-9_]+\.[a-z0-9_.]+$ ]]; then
    options+=("-E" "$name=${entry#*=}")
  fi
done < <(env -0)
if [[ -n ${ELASTIC_PASSWORD:-} ]]; then
  [[ -f config/elasticsearch.keystore ]] || elasticsearch-keystore create >/dev/null
  if ! elasticsearch-keystore list | grep -qx bootstrap.password; then
    printf '%s' "$ELASTIC_PASSWORD" | elasticsearch-keystore add -x -f bootstrap.password
  fi
fi
exec elasticsearch "${options[@]}" "$@"
