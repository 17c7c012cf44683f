"""Push discovery end to end: with etcd's watch, a client sees a new server at once.

See tests/functional/push.py: a minute's cache, so only the push explains it.
"""

from __future__ import annotations

import pytest

from tests.functional.push import check_a_server_that_starts_later_gets_calls, deployment

pytest.importorskip("etcd3gw")

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("watch", [True, False], ids=["push", "poll"])
def test_a_server_that_starts_later_gets_calls(etcd_url, tmp_path, watch):
    deploy = deployment("etcd", etcd_url, tmp_path, watch)
    check_a_server_that_starts_later_gets_calls(deploy, watch)
