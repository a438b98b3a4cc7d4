"""A tracker that is down or goes away: refused in seconds at the start, survived after it.

- Down at the start: a command that tracks (and a ``models:/`` lookup) refuses in seconds with one
  line and exit code 2, creating nothing in the output folder, the current folder or the cache.
- Gone after the start: every call, registration included, is retried, then recorded in the run
  folder's ``tracking.jsonl`` with a warning; the run writes its summary and exits 0.
- ``models:/`` downloads go to the user's cache, never to the current folder.

Network traffic goes to 127.0.0.1 only.
"""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from experts.errors import ModelFileError, TrackingError
from pipelines.cli import cli
from pipelines.runtime.config import load_config
from pipelines.runtime.store import PROBE_TIMEOUT_S, check_tracking
from pipelines.runtime.tracking import Tracker

ROOT = Path(__file__).parents[2]
TINY = ("network.channels=[4,8]", "data.patch_size=[16,16,16]", "data.n_folds=3", "train.val_every=100", "predict.sw_batch_size=1")
ADAPT = ("adapt.steps=4", "adapt.eval_every=2", "adapt.batch_size=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint(folder: Path) -> list:
    """Every path under ``folder`` with its size and modification time."""
    return sorted((str(p.relative_to(folder)), p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def sets(*items):
    return [x for s in items for x in ("--set", s)]


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "tracking.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from pipelines.pretrain import pretrain
    from toydata import make_toy_dataset

    root = tmp_path_factory.mktemp("outage")
    data = make_toy_dataset(root / "data")
    pretrain(data=str(data), out=str(root / "pre"), overrides=TINY + ("train.steps=2",), tracking="local", progress=False)
    return data, root / "pre"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """``EXPERTSEG_CACHE`` in the test's folder (not created)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EXPERTSEG_CACHE", str(folder))
    return folder


@pytest.fixture
def tracker_goes_away(monkeypatch):
    """``switch["down"] = True`` makes every MLflow client call raise a connection error;
    ``switch["only"]`` limits that to the named methods. Back-off sleeps are skipped."""
    from mlflow import MlflowClient

    switch = {"down": False, "only": None, "failed": []}
    names = ["search_experiments", "get_experiment_by_name", "create_experiment", "search_runs", "create_run", "get_run", "update_run", "set_terminated", "log_batch", "log_artifact", "log_artifacts", "log_inputs",
             "get_registered_model", "create_registered_model", "create_model_version", "set_registered_model_alias", "get_model_version_by_alias"]

    def breaking(name, real):
        @functools.wraps(real)
        def call(self, *args, **kwargs):
            if switch["down"] and (switch["only"] is None or name in switch["only"]):
                switch["failed"].append(name)
                raise ConnectionError(f"tracking server went away ({name})")
            return real(self, *args, **kwargs)

        return call

    for name in names:
        monkeypatch.setattr(MlflowClient, name, breaking(name, getattr(MlflowClient, name)))
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real_sleep(0) if s >= 0.5 else real_sleep(s))
    return switch


def test_unreachable_server_refuses_every_tracking_command_and_models_lookup_in_seconds_creating_nothing(pretrained, tmp_path):
    data, pre = pretrained
    uri = f"http://127.0.0.1:{free_port()}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("the user's own file\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "EXPERTSEG_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    commands = {
        "pretrain": ["pretrain", "--data", str(data), "--out", str(tmp_path / "out-pretrain"), *sets(*TINY)],
        "adapt": ["adapt", "--model", str(pre), "--data", str(data), "--expert", "newdoc", "--shots", "2", "--out", str(tmp_path / "out-adapt"), *sets(*ADAPT)],
        "predict": ["predict", "--model", "models:/expertseg-ToySpheres@pretrained", "--images", str(data / "imagesTs"), "--out", str(tmp_path / "out-predict")],
        "compare": ["compare", "--model", str(pre), "--data", str(data), "--out", str(tmp_path / "out-compare")],
        "tune": ["tune", "--data", str(data), "--stage", "pretrain", "--trials", "1", "--out", str(tmp_path / "out-tune")],
    }
    before = fingerprint(cwd)
    for name, args in commands.items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - t0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and uri in lines[0] and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert ("--tracking local" in lines[0]) == (name != "predict"), lines[0]
        assert seconds < 30, f"{name} took {seconds:.1f} s to refuse"  # interpreter start-up included; MLflow's own retries take minutes
        assert not (tmp_path / f"out-{name}").exists(), name
    assert fingerprint(cwd) == before
    assert not (tmp_path / "cache").exists()


def test_server_that_never_answers_fails_the_probe_within_its_timeout(monkeypatch):
    with socket.socket() as hung:  # accepts connections (the kernel does) but never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{hung.getsockname()[1]}")
        cfg = load_config(None, ())
        t0 = time.perf_counter()
        with pytest.raises(TrackingError, match=rf"does not answer \(no answer within {PROBE_TIMEOUT_S} s\).*--tracking local"):
            Tracker.probe(cfg)
        assert time.perf_counter() - t0 < PROBE_TIMEOUT_S + 3
        cfg.tracking.backend = "local"
        Tracker.probe(cfg)  # local tracking: nothing to check


def test_probe_passes_a_working_sqlite_store_and_creates_nothing(mlflow_uri, tmp_path, monkeypatch):
    cfg = load_config(None, ())
    check_tracking(cfg)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'new' / 'mlruns' / 'mlflow.db'}")
    check_tracking(cfg)  # a store to be created on first use
    assert not (tmp_path / "new").exists()
    (tmp_path / "notastore.db").write_text("hello")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'notastore.db'}")
    with pytest.raises(TrackingError, match="not an MLflow store.*--tracking local"):
        check_tracking(cfg)


def test_outage_at_the_end_of_pretraining_still_writes_the_summary_and_exits_0(pretrained, tmp_path, mlflow_uri, tracker_goes_away, monkeypatch):
    import pipelines.pretrain as pretrain_module

    data, _ = pretrained
    finish, timing = pretrain_module._finish, {}

    def outage_then_finish(*args, **kwargs):
        tracker_goes_away["down"] = True
        t0 = time.perf_counter()
        try:
            return finish(*args, **kwargs)
        finally:
            timing["finish"] = time.perf_counter() - t0

    monkeypatch.setattr(pretrain_module, "_finish", outage_then_finish)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, ["pretrain", "--data", str(data), "--out", str(out), *sets(*TINY, "train.steps=2")])
    assert result.exit_code == 0, result.output
    assert any("continuing with the local log" in str(w.message) for w in caught)
    assert "call(s) to MLflow at" in result.output and "tracker_error" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow_run_id"] and summary["registered"] is None
    log = events(out)
    failed = {e["call"] for e in log if e["event"] == "tracker_error"}
    assert {"log_artifacts", "log_artifact", "set_terminated"} <= failed, failed
    register = [e for e in log if e["event"] == "register"]
    assert register and register[-1]["version"] is None and register[-1]["name"] == "expertseg-ToySpheres"
    assert log[-1]["event"] == "tracker_error" and log[-2] == {**log[-2], "event": "end", "status": "FINISHED"}
    assert timing["finish"] < 20  # one attempt per call once the tracker is known to be failing


def test_registry_failure_at_the_end_of_pretraining_is_logged_not_raised(pretrained, tmp_path, mlflow_uri, tracker_goes_away):
    from mlflow import MlflowClient

    data, _ = pretrained
    tracker_goes_away.update(down=True, only={"get_registered_model", "create_registered_model", "create_model_version", "set_registered_model_alias"})
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, ["pretrain", "--data", str(data), "--out", str(out), *sets(*TINY, "train.steps=2")])
    assert result.exit_code == 0, result.output
    assert any("ensure_registered_model" in str(w.message) for w in caught)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["registered"] is None
    log = events(out)
    assert [e["call"] for e in log if e["event"] == "tracker_error"] == ["ensure_registered_model"]
    assert [e["version"] for e in log if e["event"] == "register"] == [None]
    run = MlflowClient(tracking_uri=mlflow_uri).get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "test/dice_mean" in run.data.metrics  # everything else was sent


def test_tracker_gone_after_adaptation_trained_still_writes_the_summary_and_exits_0(pretrained, tmp_path, mlflow_uri, tracker_goes_away, monkeypatch):
    import pipelines.adapt as adapt_module

    data, pre = pretrained
    write_outputs = adapt_module._write_outputs

    def outage_then_write(*args, **kwargs):  # after training, before any tracker call
        tracker_goes_away["down"] = True
        return write_outputs(*args, **kwargs)

    monkeypatch.setattr(adapt_module, "_write_outputs", outage_then_write)
    out = tmp_path / "adapt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, ["adapt", "--model", str(pre), "--data", str(data), "--expert", "newdoc", "--shots", "2", "--out", str(out), *sets(*ADAPT)])
    assert result.exit_code == 0, result.output
    assert "warning: no MLflow parent run" in result.output
    assert any("continuing with the local log" in str(w.message) for w in caught)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow_run_id"] is None and (out / "adapter" / "adapter.pt").exists()
    assert "open_run" in {e["call"] for e in events(out) if e["event"] == "tracker_error"}
    assert "call(s) to MLflow at" in result.output


def test_models_lookup_downloads_into_the_cache_and_never_touches_the_current_folder(pretrained, tmp_path, mlflow_uri, cache, monkeypatch):
    from pipelines.runtime.models import resolve_model_dir

    _, pre = pretrained
    with Tracker(run_dir=tmp_path / "reg", stage="pretrain") as tracker:
        tracker.log_artifact(pre / "model", "model")
        assert tracker.register_model(artifact_path="model", name="expertseg-Outage", alias="pretrained") == "1"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ModelFileError, match="models:/expertseg-Outage@nope: cannot fetch"):
        resolve_model_dir("models:/expertseg-Outage@nope")
    assert not cache.exists()
    folder = resolve_model_dir("models:/expertseg-Outage@pretrained")
    assert cache / "models" in folder.parents and (folder / "model.json").is_file() and (folder / "weights.pt").is_file()
    again = resolve_model_dir("models:/expertseg-Outage@pretrained")  # a fresh copy replaces the old one
    assert again == folder and (again / "model.json").is_file()
    assert [p.name for p in (cache / "models").iterdir()] == [folder.relative_to(cache / "models").parts[0]]
    assert fingerprint(cwd) == []


def test_models_lookup_without_a_store_creates_none(tmp_path, cache, monkeypatch):
    from pipelines.runtime.models import resolve_model_dir

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    before = fingerprint(tmp_path)
    with pytest.raises(ModelFileError, match=r"models:/x@y: no MLflow store at .*mlruns/mlflow\.db"):
        resolve_model_dir("models:/x@y")
    assert fingerprint(tmp_path) == before  # no ./mlruns, no cache


def test_cache_folder_follows_expertseg_cache_then_xdg(tmp_path, monkeypatch):
    from pipelines.runtime.models import cache_dir

    monkeypatch.delenv("EXPERTSEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "expertseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "expertseg"
    monkeypatch.setenv("EXPERTSEG_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


@pytest.fixture
def mlflow_server(mlflow_store_master, tmp_path):
    """A real ``mlflow server`` on a loopback port (SQLite store copied, already migrated); skipped
    when it takes more than 15 s to answer. Yields ``(url, kill)``."""
    if not (Path(sys.executable).parent / "mlflow").exists():
        pytest.skip("no mlflow executable beside the interpreter")
    folder = tmp_path / "server"
    folder.mkdir()
    shutil.copy(mlflow_store_master, folder / "mlflow.db")
    port = free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def kill():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    try:
        deadline = time.time() + 15
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.skip("a local MLflow server did not answer within 15 s")
                time.sleep(0.25)
        yield url, kill
    finally:
        kill()
        log.close()


def test_server_killed_mid_pretraining_the_run_finishes_and_exits_0(pretrained, mlflow_server, tmp_path):
    data, _ = pretrained
    url, kill = mlflow_server
    out = tmp_path / "run"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "EXPERTSEG_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "pipelines.cli", "pretrain", "--data", str(data), "--out", str(out), *sets(*TINY, "train.steps=12", "train.checkpoint_every=2", "train.log_every=1")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step_*.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:] if proc.poll() is not None else "no checkpoint"
        time.sleep(0.05)
    kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "continuing with the local log" in stderr
    assert "call(s) to MLflow at" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mlflow_run_id"] and summary["registered"] is None
    log = events(out)
    assert any(e["event"] == "tracker_error" for e in log)
    assert [e["step"] for e in log if e["event"] == "metrics" and "train/loss" in e["metrics"]] == list(range(1, 13))
