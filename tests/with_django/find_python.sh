#!/bin/sh
# Prints the path of a Python 3.12+ for the Django tests (Django 6 needs it), or nothing:
# $CONVEYOR_DJANGO_PYTHON, else python3.12 / python3.13 on PATH (a pyenv shim counts only if
# it runs), else the newest 3.12, then 3.13, under pyenv's versions directory.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
if [ -n "${CONVEYOR_DJANGO_PYTHON:-}" ] && ok "$CONVEYOR_DJANGO_PYTHON"; then
    echo "$CONVEYOR_DJANGO_PYTHON"; exit 0
fi
for name in python3.12 python3.13 python3; do
    found=$(command -v "$name" 2>/dev/null) || continue
    if ok "$found"; then echo "$found"; exit 0; fi
done
for minor in 12 13; do
    for found in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.$minor.*/bin/python 2>/dev/null | sort -rV); do
        if ok "$found"; then echo "$found"; exit 0; fi
    done
done
