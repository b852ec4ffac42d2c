#!/bin/sh
# Regenerates the .pyc fixtures from mod.py with each CPython version
# that pyenv has installed. They are our own files, compiled by CPython
# (the bytecode carries no CPython code).
set -e
cd "$(dirname "$0")"
for v in 3.8 3.10 3.11 3.12 3.13; do
	py="$HOME/.pyenv/versions/$(ls "$HOME/.pyenv/versions" | grep "^$v\." | head -1)/bin/python$v"
	"$py" -c "import py_compile, sys; py_compile.compile('mod.py', cfile='mod.' + sys.implementation.cache_tag + '.pyc', doraise=True)"
done
