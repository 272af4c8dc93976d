"""The Synapse worker filters: thin wrappers of module_utils/synapse_workers.py, errors as AnsibleFilterError."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mxedge.matrix.plugins.filter.synapse_worker_layout import synapse_worker_layout
from ansible_collections.mxedge.matrix.plugins.filter.synapse_worker_pools import synapse_worker_pools
from ansible_collections.mxedge.matrix.plugins.filter.synapse_worker_settings import synapse_worker_settings
from ansible_collections.mxedge.matrix.plugins.filter.synapse_workers_problems import synapse_workers_problems

WORKERS = [{"name": "sync1", "type": "sync", "host": "hs1", "port": 18101}]


@pytest.mark.parametrize(
    "call,expected",
    [
        (lambda: synapse_workers_problems(WORKERS, ["hs1"]), []),
        (lambda: synapse_workers_problems(WORKERS, ["hs1"], database="sqlite")[0][:41],
         "matrix_workers needs homeserver_database:"),
        (lambda: synapse_workers_problems(WORKERS, ["hs1"], main_ports=[["hs1", 18101]]),
         ["matrix_workers[0] (sync1): port 18101 on hs1 is also the main process's"]),
        (lambda: [p["class"] for p in synapse_worker_pools(WORKERS, {"hs1": "10.0.0.1"})], ["sync"]),
        (lambda: synapse_worker_pools(WORKERS, {"hs1": "10.0.0.1"})[0]["servers"],
         [{"name": "sync1", "address": "10.0.0.1", "port": 18101}]),
        (lambda: len(synapse_worker_layout("readers", ["hs1", "hs2"], sync=3)), 7),
        (lambda: [w["name"] for w in synapse_worker_settings(WORKERS, "hs1", True, "10.0.0.1", "9093", {"hs1": "10.0.0.1"},
                                                             ["10.0.0.1"], "/etc/synapse", "/var/log/synapse")["workers"]],
         ["sync1"]),
    ],
)
def test_filters(call, expected):
    assert call() == expected


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: synapse_worker_layout("two_of_each", ["hs1"]), "synapse_worker_layout: matrix_workers_layout must be one of"),
        (lambda: synapse_worker_pools(WORKERS, {}), "synapse_worker_pools: 'hs1' (check matrix_workers first)"),
        (lambda: synapse_worker_settings(WORKERS, "hs1", True, "10.0.0.1", 9093, {"hs1": "10.0.0.1"}, [], "/e", "/l"),
         "synapse_worker_settings: the main process's replication listener needs an address"),
    ],
)
def test_filter_errors_name_the_filter(call, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
