"""The sweep on a 2-worker Dask LocalCluster: the serial run's results, every point once, a worker killed
mid-sweep, resume from the cache."""

import functools
import os
import sys
from pathlib import Path

import pytest

from systolic.sweep.run import run_sweep
from systolic.sweep.spec import expand, parse_spec
from systolic.sweep.tasks import point_key, run_point
from tests.requirements import require

require("distributed", "sweep")

pytestmark = pytest.mark.slow

#: 8 points: 2 dataflows x 2 array sizes x 2 random models, cycle-model metrics on 2 images.
SPEC = {"base": "tiny", "grid": {"dataflow": ["ws", "os"], "rows": [2, 4]},
        "models": ["random:mlp", "random:cnn"], "metrics": ["cycles", "energy"], "images": 2}


def _strip(rows):
    """The rows without their wall times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def client():
    import cloudpickle
    from dask.distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers cannot import the tests
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return run_sweep(parse_spec(SPEC), tmp_path_factory.mktemp("serial"), workers=0, progress=False)


def _kill_once(point, marker_dir):
    """run_point, except that the worker running the 4-row OS cnn point dies the first time."""
    marker = Path(marker_dir) / "killed"
    c = point["config"]
    if point["model"] == "random:cnn" and c["rows"] == 4 and c["dataflow"] == "os" and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return run_point(point)


def test_cluster_equals_serial_every_point_once(client, serial, tmp_path):
    assert serial.computed == 8 and serial.errors == 0
    run = run_sweep(parse_spec(SPEC), tmp_path, client=client, progress=False)
    assert run.computed == 8 and run.cached == 0
    assert _strip(run.rows) == _strip(serial.rows)
    assert sorted(r["key"] for r in run.rows) == sorted(point_key(p) for p in expand(parse_spec(SPEC)))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 8


def test_killed_worker_loses_only_its_point(client, serial, tmp_path):
    task = functools.partial(_kill_once, marker_dir=str(tmp_path))
    run = run_sweep(parse_spec(SPEC), tmp_path / "out", client=client, progress=False, task=task)
    assert (tmp_path / "killed").exists()                                  # a worker did die
    assert run.computed == 8 and run.errors == 0
    assert _strip(run.rows) == _strip(serial.rows)
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 8


def _never(point):
    raise AssertionError("a cached point ran again")


def test_resume_computes_only_what_is_missing(client, serial, tmp_path):
    run_sweep(parse_spec(SPEC), tmp_path, client=client, progress=False)
    again = run_sweep(parse_spec(SPEC), tmp_path, workers=2, progress=False, task=_never)   # no cluster started
    assert again.computed == 0 and again.cached == 8
    assert _strip(again.rows) == _strip(serial.rows)
    for f in sorted((tmp_path / "cache").glob("*.json"))[:3]:              # as if killed before these finished
        f.unlink()
    resumed = run_sweep(parse_spec(SPEC), tmp_path, client=client, progress=False)
    assert resumed.computed == 3 and resumed.cached == 5
    assert _strip(resumed.rows) == _strip(serial.rows)
