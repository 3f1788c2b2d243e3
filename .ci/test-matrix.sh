#!/usr/bin/env bash
# Version matrix for sipguard.firewall.
#
#   .ci/test-matrix.sh [--integration] [--only CELL[,CELL...]] [--jobs N]
#
# Controller cells (core/python): build the tarball with that ansible-core, install it with
# `ansible-galaxy collection install -p`, and run tests/unit in the installed copy, as `make unit`
# does. --integration then also runs tests/integration in each of those copies, one cell at a time
# (they share the namespace lab; needs root). --jobs N runs N unit/target cells at once.
#
# Target cells (target/python): the module code on each target Python. Every file under
# plugins/modules and plugins/module_utils is compiled (py_compile), and the pure module_utils
# tests run with only pytest, hypothesis and PyYAML installed (no ansible-core: module_utils
# import nothing from `ansible`, only `ansible_collections.sipguard.firewall...` and the stdlib).
# The modules themselves import ansible.module_utils.basic, which ansible-core ships to the
# target; they are compile-checked here, and exercised for real by the integration tests.
#
# Each cell has its own venv under $SIPGUARD_MATRIX_DIR (default /var/tmp/sipguard-matrix),
# reused while its pins are unchanged. Interpreters come from $PYENV_ROOT/versions (default
# /root/.pyenv/versions). Prints a summary table; exits non-zero if any cell failed or was missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${SIPGUARD_MATRIX_DIR:-/var/tmp/sipguard-matrix}
PYENV_VERSIONS=${PYENV_ROOT:-/root/.pyenv}/versions

# ansible-core minor -> latest patch (checked with `pip index versions ansible-core`).
declare -A CORE_PIN=([2.17]=2.17.14 [2.19]=2.19.14 [2.21]=2.21.5)
# Controller cells: ansible-core minor/python minor. 2.20+ need Python >= 3.12.
CONTROLLER_CELLS=(2.17/3.11 2.19/3.11 2.21/3.12 2.21/3.13)
# Target cells: module code on these Pythons.
TARGET_CELLS=(3.8 3.9 3.10 3.11 3.12 3.13)
# The module_utils tests that need nothing but the stdlib, pytest, hypothesis and PyYAML.
PURE_TESTS=(
  tests/unit/plugins/module_utils/test_netfilter.py
  tests/unit/plugins/module_utils/test_ufw_model.py
  tests/unit/plugins/module_utils/test_ports.py
  tests/unit/plugins/module_utils/test_sip.py
  tests/unit/plugins/module_utils/test_sip_prober.py
)

# Test pins, from requirements-test.txt. Pythons older than the pinned tools' floor get the last
# release that supports them (pytest 9 needs Python >= 3.10, hypothesis 6.169+ needs >= 3.11).
req() { sed -n "s/^$1\([=><].*\)$/$1\1/p" "$ROOT/requirements-test.txt"; }
test_pins() {  # python minor -> pip requirement list
  case "$1" in
    3.8) echo "pytest==8.3.5 hypothesis==6.113.0 PyYAML==6.0.3" ;;
    3.9) echo "pytest==8.4.2 hypothesis==6.141.1 PyYAML==6.0.3" ;;
    3.10) echo "$(req pytest) hypothesis==6.168.5 $(req PyYAML)" ;;
    *) echo "$(req pytest) $(req hypothesis) $(req PyYAML)" ;;
  esac
}
controller_pins() {  # core minor, python minor
  echo "ansible-core==${CORE_PIN[$1]} $(test_pins "$2") $(req jsonschema) $(req xmlschema) $(req ansible-runner)"
}

integration=false
only=""
jobs=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --integration) integration=true ;;
    --only) only=$2; shift ;;
    --jobs|-j) jobs=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
selected() { [[ -z "$only" ]] || [[ ",$only," == *",$1,"* ]]; }

python_for() {  # python minor -> interpreter path (newest pyenv build of that minor), or fail
  local v
  v=$(ls -d "$PYENV_VERSIONS/$1".* 2>/dev/null | sort -V | tail -1 || true)
  [[ -n "$v" && -x "$v/bin/python$1" ]] || return 1
  echo "$v/bin/python$1"
}

# venv DIR PYTHON PINS...: (re)create DIR unless it already holds exactly these pins.
venv() {
  local dir=$1 py=$2; shift 2
  local stamp="$*"
  if [[ -x "$dir/bin/python" && -f "$dir/.pins" && "$(cat "$dir/.pins")" == "$stamp" ]]; then
    return 0
  fi
  rm -rf "$dir"
  "$py" -m venv "$dir"
  if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >"$dir.pip.log" 2>&1; then
    grep -v 'is ignored: it is neither' "$dir.pip.log" >&2
    return 1
  fi
  "$dir/bin/python" -m pip check
  echo "$stamp" >"$dir/.pins"
}

# The last pytest summary line ("12 passed, 1 skipped in 3.2s"), without the time.
counts() {
  { grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped)|no tests ran' "$1" || true; } | tail -1 \
    | sed -E 's/^=+ //; s/ in [0-9.]+s.*$//; s/ =+$//'
}

mkdir -p "$CACHE/logs"
RESULTS="$CACHE/logs/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }  # cell kind result counts seconds

run_controller() {
  local core=${1%/*} pyv=${1#*/} py dir log t0 rc c
  dir="$CACHE/$core-$pyv"
  log="$CACHE/logs/controller-$core-$pyv.log"
  t0=$SECONDS
  if ! py=$(python_for "$pyv"); then
    record "$core/$pyv" controller MISSING "no Python $pyv under $PYENV_VERSIONS" 0; return
  fi
  # A subshell with its own `set -e`, not in an `||` context, so that any failed step ends it.
  set +e
  (
    set -e
    echo "== controller ansible-core ${CORE_PIN[$core]} on $py"
    # shellcheck disable=SC2046
    venv "$dir/venv" "$py" $(controller_pins "$core" "$pyv")
    "$dir/venv/bin/python" -m pip freeze
    rm -rf "$dir/build" "$dir/collections"
    "$dir/venv/bin/ansible-galaxy" collection build --output-path "$dir/build" --force "$ROOT"
    "$dir/venv/bin/ansible-galaxy" collection install --force -p "$dir/collections" "$dir"/build/sipguard-firewall-*.tar.gz
    cd "$dir/collections/ansible_collections/sipguard/firewall"
    ANSIBLE_COLLECTIONS_PATH="$dir/collections" PATH="$dir/venv/bin:$PATH" PYTHONDONTWRITEBYTECODE=1 \
      HYPOTHESIS_STORAGE_DIRECTORY="$dir/hypothesis" \
      "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit
  ) >"$log" 2>&1
  rc=$?
  set -e
  c=$(counts "$log"); c=${c:-"see $log"}
  record "$core/$pyv" unit "$([[ $rc -eq 0 ]] && echo pass || echo FAIL)" "$c" $((SECONDS - t0))
}

# Integration tests share one namespace lab, so cells run them one at a time, after the unit
# tests, each against its own installed copy and ansible-core.
run_integration() {
  local core=${1%/*} pyv=${1#*/} dir log t0 rc c
  dir="$CACHE/$core-$pyv"
  log="$CACHE/logs/integration-$core-$pyv.log"
  if ! grep -qP "^$core/$pyv\tunit\tpass\t" "$RESULTS"; then
    record "$core/$pyv" integration SKIPPED "unit tests did not pass" 0; return
  fi
  t0=$SECONDS
  set +e
  (
    set -e
    cd "$dir/collections/ansible_collections/sipguard/firewall"
    ANSIBLE_COLLECTIONS_PATH="$dir/collections" ANSIBLE_HOST_KEY_CHECKING=False PATH="$dir/venv/bin:$PATH" \
      PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY="$dir/hypothesis" \
      "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider tests/integration
  ) >"$log" 2>&1
  rc=$?
  set -e
  c=$(counts "$log"); c=${c:-"see $log"}
  record "$core/$pyv" integration "$([[ $rc -eq 0 ]] && echo pass || echo FAIL)" "$c" $((SECONDS - t0))
}

# The collection as installed from a tarball, for the target cells. Built with the ansible-core
# pinned in requirements-test.txt: the project's .venv, else a venv of its own in the cache.
TARGET_TREE="$CACHE/target/collections/ansible_collections/sipguard/firewall"
prepare_target_tree() {
  local galaxy="$ROOT/.venv/bin/ansible-galaxy" py
  if [[ ! -x "$galaxy" ]]; then
    py=$(python_for 3.11) || py=$(python_for 3.12) || { echo "no Python 3.11/3.12 to build with" >&2; return 1; }
    venv "$CACHE/galaxy/venv" "$py" "$(req ansible-core)"
    galaxy="$CACHE/galaxy/venv/bin/ansible-galaxy"
  fi
  rm -rf "$CACHE/target/build" "$CACHE/target/collections"
  "$galaxy" collection build --output-path "$CACHE/target/build" --force "$ROOT" >/dev/null
  "$galaxy" collection install --force -p "$CACHE/target/collections" "$CACHE"/target/build/sipguard-firewall-*.tar.gz >/dev/null
}

run_target() {
  local pyv=$1 py dir log t0 rc c files
  dir="$CACHE/target-$pyv"
  log="$CACHE/logs/target-$pyv.log"
  t0=$SECONDS
  if ! py=$(python_for "$pyv"); then
    record "target/$pyv" module MISSING "no Python $pyv under $PYENV_VERSIONS" 0; return
  fi
  set +e
  (
    set -e
    echo "== target code on $py"
    # shellcheck disable=SC2046
    venv "$dir/venv" "$py" $(test_pins "$pyv")
    "$dir/venv/bin/python" -m pip freeze
    cd "$TARGET_TREE"
    files=(plugins/modules/*.py plugins/module_utils/*.py)
    echo "py_compile: ${#files[@]} files"
    PYTHONPYCACHEPREFIX="$dir/pycache" "$dir/venv/bin/python" -m py_compile "${files[@]}"
    # No ansible-core in this venv: an accidental `import ansible` in module_utils fails the tests.
    if "$dir/venv/bin/python" -c 'import ansible' 2>/dev/null; then
      echo "ansible is importable in $dir/venv; the target test would not prove module_utils stdlib-only" >&2
      exit 1
    fi
    PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY="$dir/hypothesis" \
      "$dir/venv/bin/python" -m pytest -q -p no:cacheprovider "${PURE_TESTS[@]}"
  ) >"$log" 2>&1
  rc=$?
  set -e
  c=$(counts "$log"); c=${c:-"see $log"}
  files=$(sed -n 's/^py_compile: \([0-9]*\) files$/\1/p' "$log")
  record "target/$pyv" "py_compile(${files:-?})+module_utils" "$([[ $rc -eq 0 ]] && echo pass || echo FAIL)" "$c" $((SECONDS - t0))
}

start=$SECONDS
expected=0
pids=()
throttle() { while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done; }
for cell in "${CONTROLLER_CELLS[@]}"; do
  selected "$cell" || continue
  expected=$((expected + 1)); $integration && expected=$((expected + 1))
  throttle; run_controller "$cell" & pids+=($!)
done
wait "${pids[@]}" 2>/dev/null || true
if $integration; then
  for cell in "${CONTROLLER_CELLS[@]}"; do
    selected "$cell" && run_integration "$cell"
  done
fi

want_target=false
for pyv in "${TARGET_CELLS[@]}"; do selected "target/$pyv" && want_target=true; done
if $want_target; then
  if prepare_target_tree >"$CACHE/logs/target-build.log" 2>&1; then
    pids=()
    for pyv in "${TARGET_CELLS[@]}"; do
      selected "target/$pyv" || continue
      expected=$((expected + 1))
      throttle; run_target "$pyv" & pids+=($!)
    done
    wait "${pids[@]}" 2>/dev/null || true
  else
    expected=$((expected + 1))
    record "target/*" build FAIL "see $CACHE/logs/target-build.log" 0
  fi
fi

echo
printf '%-12s %-28s %-8s %-36s %s\n' "cell" "what" "result" "tests" "seconds"
printf '%-12s %-28s %-8s %-36s %s\n' "----" "----" "------" "-----" "-------"
sort -t$'\t' -k1,1V "$RESULTS" | while IFS=$'\t' read -r cell kind result c secs; do
  printf '%-12s %-28s %-8s %-36s %s\n' "$cell" "$kind" "$result" "$c" "$secs"
done
echo "wall time: $((SECONDS - start))s; logs in $CACHE/logs"
if [[ $expected -eq 0 ]]; then echo "no cell selected" >&2; exit 2; fi
got=$(wc -l <"$RESULTS")
if [[ $got -ne $expected ]]; then
  echo "only $got of $expected results were recorded: a cell died without reporting (see the logs)" >&2
  exit 1
fi
! grep -qvP '\tpass\t' "$RESULTS"
