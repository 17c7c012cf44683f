#!/usr/bin/env bash
# Install what the tests need, then run them all. Usage: ./test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v redis-server >/dev/null 2>&1; then
    echo "test.sh: installing redis-server (the tests start their own instances)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v etcd >/dev/null 2>&1; then
    echo "test.sh: installing etcd-server (the tests start their own members)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "test.sh: installing chromium (the status page is rendered in headless Chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "test.sh: installing rabbitmq-server (the migration tests start it if it is not running)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
fi
python -m pip install -q -e '.[test]'
exec python -m pytest "$@"
