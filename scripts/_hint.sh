# Sourced at the end of both quick-start scripts: print the one line that puts the `histolib`
# command (installed in .venv/bin) on the PATH. tests/test_scripts.py runs the line it prints.
# START_DIR is where the user ran the script from (set by _venv.sh); the path is relative to it
# when that is the repository root.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ "${START_DIR:-$PWD}" == "$_root" ]]; then _activate=.venv/bin/activate
else _activate=$(printf '%q' "$_root/.venv/bin/activate"); fi
echo "next: source $_activate && histolib --help"
unset _root _activate
