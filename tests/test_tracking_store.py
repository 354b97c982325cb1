"""Jobs started by hand at the same moment on a fresh SQLite tracking store all get their run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

JOB = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from timoe.tracking import tracked_run

    uri, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True)
    with tracked_run(uri=uri, experiment="timoe/race", stage="train", config={"a": 1}, out_dir=out,
                     inputs={}, run_name=out.name):
        pass
    print((out / "run_id.txt").read_text().strip())
    """
)


def test_parallel_jobs_on_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, uri, str(tmp_path / f"job{i}")],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for rc, _out, err in results:
        assert rc == 0, err[-2000:]
    run_ids = {out.strip().splitlines()[-1] for _rc, out, _err in results}
    assert len(run_ids) == 4

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("timoe/race")
    assert exp is not None
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == run_ids
