#!/bin/sh
# The image's build steps, runnable without Docker (a test runs them on a clean venv): install the
# service from a source tree into a new virtual environment and check that its entry point starts.
#   sh deploy/build.sh <venv directory> [<source tree, default .>]
set -eu
venv=$1
source=${2:-.}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "$source[s3]"  # [s3]: the evidence store may be a bucket
"$venv/bin/python" -m services.cli --help >/dev/null
