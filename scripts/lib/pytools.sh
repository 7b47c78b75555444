# shellcheck shell=bash
# Python tools for CI and the README's commands, installed from pin files under version
# control (tools/requirements-*.txt: every package, transitive ones included, at an exact
# version) into a virtualenv whose path the caller names. The venv remembers the SHA-256 of
# the pin file it was built from and is rebuilt whenever that file changes, so a registry
# release can never change what CI runs, and a changed pin is never ignored by a warm cache.
#
#   source scripts/lib/pytools.sh
#   ensure_venv "$venv" tools/requirements-contract.txt

ensure_venv() {
  local venv=$1 pins=$2 want have
  want=$(sha256sum "$pins" | cut -d' ' -f1)
  have=$(cat "$venv/.pins-sha256" 2>/dev/null || true)
  if [[ $want == "$have" ]]; then
    return 0
  fi
  echo "installing $(basename "$pins") into $venv (pins changed or venv missing)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: the pin file lists every package; nothing unpinned can be pulled in.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$pins"
  "$venv/bin/pip" check -q >/dev/null || { "$venv/bin/pip" check; return 1; }
  echo "$want" >"$venv/.pins-sha256"
}
