#!/usr/bin/env bash
# Run galaxy-importer on a built collection tarball, the checks Galaxy / Automation Hub run on
# upload (metadata, docs via ansible-doc, role READMEs, changelog, ansible-lint), offline and
# without a container engine (.ci/galaxy-importer.cfg).
#
#   .ci/galaxy_importer.sh TARBALL VENV_BIN [--strict]
#
# VENV_BIN is the bin/ directory of a venv with galaxy-importer installed; its ansible-doc and
# ansible-lint are the ones the importer runs. Exits non-zero when the import fails (any ERROR),
# and with --strict also on any WARNING. The importer's JSON result is kept next to the tarball
# (importer_result.json), its log as importer.log.
set -euo pipefail

usage() { echo "usage: $0 TARBALL VENV_BIN [--strict]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
tarball=$(readlink -f "$1")
venv_bin=$(readlink -f "$2")
strict=false
[[ "${3:-}" == "--strict" ]] && strict=true
[[ -f "$tarball" ]] || { echo "$0: no such tarball: $1" >&2; exit 2; }
[[ -x "$venv_bin/python" ]] || { echo "$0: $2 is not a venv bin directory (no python)" >&2; exit 2; }
"$venv_bin/python" -c 'import galaxy_importer' 2>/dev/null \
  || { echo "$0: galaxy-importer is not installed in $venv_bin (pip install galaxy-importer)" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir=$(dirname "$tarball")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The importer writes importer_result.json into the current directory.
set +e
(
  cd "$work"
  # Its own HOME: the importer installs the collection under ~/.ansible/collections, where a stale
  # copy would later shadow the freshly built one for ansible-lint and ansible-doc.
  HOME="$work" GALAXY_IMPORTER_CONFIG="$here/galaxy-importer.cfg" PATH="$venv_bin:$PATH" ANSIBLE_NOCOLOR=1 \
    "$venv_bin/python" -m galaxy_importer.main "$tarball"
) 2>&1 | tee "$out_dir/importer.log"
rc=${PIPESTATUS[0]}
set -e
[[ -f "$work/importer_result.json" ]] && cp "$work/importer_result.json" "$out_dir/importer_result.json"

errors=$(grep -c '^ERROR' "$out_dir/importer.log" || true)
warnings=$(grep -c '^WARNING' "$out_dir/importer.log" || true)
echo "galaxy-importer: rc=$rc, $errors error(s), $warnings warning(s); log $out_dir/importer.log"
if [[ $rc -ne 0 || $errors -gt 0 ]]; then
  echo "galaxy-importer: the import FAILED" >&2
  exit 1
fi
if $strict && [[ $warnings -gt 0 ]]; then
  echo "galaxy-importer: warnings present and --strict given" >&2
  exit 1
fi
