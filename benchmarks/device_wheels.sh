#!/bin/sh
# The wheels the record searches need on a lent GPU machine, which has torch but not Optuna or SQLAlchemy and
# cannot reach a package index: downloaded here into .whl/ (ignored by git), carried with the call, installed
# there with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
# The versions are those the dev extra installs here; the machine's Python is 3.12 on x86-64.
set -e
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
for package in optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 greenlet==3.5.6 Mako==1.4.3 SQLAlchemy==2.1.9; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$package"
done
ls .whl
