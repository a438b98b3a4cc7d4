"""Team mode: tune workers share one Optuna study on PostgreSQL and one MLflow parent run on a
tracking server backed by the same PostgreSQL; a killed worker's trial is retried.

Skipped where no PostgreSQL server can be found, unless EXPERTSEG_REQUIRE_POSTGRES=1 (set by
.ci/run), which turns the skip into a failure.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_postgres(reason: str):
    if os.environ.get("EXPERTSEG_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (EXPERTSEG_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """Base URL of a PostgreSQL server: EXPERTSEG_PG_URL, or a throwaway cluster from scripts/postgres.sh."""
    pytest.importorskip("psycopg") if os.environ.get("EXPERTSEG_REQUIRE_POSTGRES") != "1" else __import__("psycopg")
    url = os.environ.get("EXPERTSEG_PG_URL")
    if url:
        yield url.rstrip("/")
        return
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        no_postgres("no PostgreSQL server binaries (initdb) on this machine")
    folder = Path(f"/tmp/expertseg-pg-{uuid.uuid4().hex[:8]}")
    port = free_port()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "start", str(folder), str(port)], capture_output=True, text=True)
    if proc.returncode != 0:
        no_postgres(f"could not start PostgreSQL: {proc.stderr.strip()[-300:]}")
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def create_db(base: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    db = create_db(postgres)
    port = free_port()
    art = tmp_path_factory.mktemp("artifacts")
    env = {**os.environ, "BACKEND_URI": db, "ARTIFACTS": str(art), "HOST": "127.0.0.1", "PORT": str(port), "EXPERTSEG_VENV": str(Path(sys.executable).parents[1])}
    log = open(art / "server.log", "w")
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "mlflow-server.sh")], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("MLflow server did not start: " + (art / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_workers_share_a_study_and_a_parent_run_and_a_killed_trial_is_retried(postgres, mlflow_server, toy_dataset, tmp_path):
    import optuna
    from mlflow import MlflowClient

    from pipelines.pretrain import pretrain
    from pipelines.tune import open_storage

    pretrain(data=str(toy_dataset), out=str(tmp_path / "pre"), overrides=("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.steps=4", "train.val_every=100"), tracking="local", progress=False)
    storage = create_db(postgres)
    study = f"team-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1"}
    env.pop("EXPERTSEG_PG_URL", None)

    def worker(name, trials, steps):
        cmd = [sys.executable, "-m", "pipelines.cli", "tune", "--data", str(toy_dataset), "--stage", "adapt", "--model", str(tmp_path / "pre"), "--expert", "newdoc", "--shots", "2",
               "--trials", str(trials), "--out", str(tmp_path / name), "--storage", storage, "--study", study, "--heartbeat", "1", "--pruner", "median",
               "--set", f"adapt.steps={steps}", "--set", "adapt.eval_every=2", "--set", "adapt.batch_size=1"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # Worker A starts a long trial and is killed in the middle of it.
    a = worker("a", 1, 400)
    deadline = time.time() + 120
    while True:
        try:
            s = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=1, grace=None))
            if any(t.state == optuna.trial.TrialState.RUNNING for t in s.trials):
                break
        except KeyError:
            pass
        assert a.poll() is None and time.time() < deadline, a.stdout.read() if a.poll() is not None else "timeout"
        time.sleep(0.3)
    time.sleep(2)
    a.send_signal(signal.SIGKILL)
    a.wait()
    time.sleep(3)  # past the grace period (2 heartbeats)

    # Two more workers join the same study at the same time.
    b, c = worker("b", 4, 8), worker("c", 4, 8)
    for p in (b, c):
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]

    s = optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=1, grace=None))
    states = [t.state for t in s.trials]
    assert optuna.trial.TrialState.FAIL in states, states
    retried = [t for t in s.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert retried and retried[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1, states
    parent = s.user_attrs["mlflow_parent_run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("expertseg-tune")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) >= 9, len(children)  # the killed trial, its retry and the others
    assert {r.data.tags.get("study") for r in children} == {study}
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.study = '{study}' and tags.role = 'parent'")
    assert [r.info.run_id for r in parents] == [parent]
