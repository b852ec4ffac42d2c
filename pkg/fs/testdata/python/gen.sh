#!/bin/sh
# Regenerates the compiled modules of the Python import-speculation test
# (deps_test.go) from src/ with CPython 3.11 (pyenv's or the system's):
# our own sources, compiled by CPython.
set -e
cd "$(dirname "$0")"
py=$(ls "$HOME"/.pyenv/versions/3.11.*/bin/python3.11 2>/dev/null | head -1)
py=${py:-python3.11}
rm -rf pyc && cp -r src pyc
"$py" -c "import compileall, sys; sys.exit(not compileall.compile_dir('pyc', quiet=1))"
find pyc -name '*.py' -delete
