#!/usr/bin/env bash
# Fetches the peers' own code, at pinned commits, into a cache outside the sources
# (default build/peers; PEERS_DIR overrides), for tests/peers/test_peer_suites.py.
# Needs git and network access to github.com; Gymie-Client also needs npm and the npm registry.
# The peers' code is never copied into the project: it lives only in the cache.
# PEERS_GIT_BASE replaces https://github.com (a mirror holding OWNER/REPO.git).
# Usage: tests/peers/fetch_peers.sh [--no-npm]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${PEERS_DIR:-$ROOT/build/peers}"
NPM=1
[[ "${1:-}" == "--no-npm" ]] && NPM=0
mkdir -p "$DEST"

# name  owner/repo  commit (kept in step with PINS in test_peer_suites.py)
PEERS=(
  "gym-http-api openai/gym-http-api 15b68c3921fb8cd29366b50771cd5b0121c55872"
  "gymnasium-http-api unrenormalizable/gymnasium-http-api 3602bbaae3ea11b2dd5b61879a16a672e8faa500"
  "Gymie-Client jscriptcoder/Gymie-Client 26be04c44a59657f4f8a2df8e64c0ace8ccb70b4"
)

for line in "${PEERS[@]}"; do
  read -r name repo commit <<<"$line"
  dir="$DEST/$name"
  if [[ -d "$dir/.git" ]] && [[ "$(git -C "$dir" rev-parse HEAD 2>/dev/null)" == "$commit" ]]; then
    echo "$name: already at $commit"
  else
    rm -rf "$dir"
    git init -q "$dir"
    git -C "$dir" remote add origin "${PEERS_GIT_BASE:-https://github.com}/$repo.git"
    # a shallow fetch of one commit; servers that refuse it get a full clone
    if ! git -C "$dir" fetch -q --depth 1 origin "$commit" 2>/dev/null; then
      git -C "$dir" fetch -q origin
    fi
    git -C "$dir" -c advice.detachedHead=false checkout -q "$commit"
    echo "$name: checked out $commit"
  fi
done

if [[ $NPM == 1 ]]; then
  dir="$DEST/Gymie-Client"
  if [[ ! -x "$dir/node_modules/.bin/ts-node" ]]; then
    # --ignore-scripts: its preinstall would pip-install the original Gymie server
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  fi
  echo "Gymie-Client: node_modules ready"
fi
