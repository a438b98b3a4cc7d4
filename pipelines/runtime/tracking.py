"""Run tracking: a local JSON log always, MLflow too unless ``--tracking local``.

The local log (``<run>/tracking.jsonl``, one JSON object per line) is the source of truth: it is
written first, so a tracker outage never loses a run. MLflow is reached through ``MlflowClient`` (no
global active run), so trials and children in other processes attach by ``parent_run_id``.

Defaults: ``MLFLOW_TRACKING_URI`` wins when set; otherwise a SQLite store at ``./mlruns/mlflow.db``
with artifacts under ``./mlruns/artifacts/<experiment>`` (absolute locations). Experiments are created
from ``mlruns_template/experiments.yaml``. An unreachable server fails the run at start within
seconds, with a message; an error in the middle of a run is retried, then recorded locally with a
warning, and training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import yaml

from experts.errors import TrackingError

__all__ = ["Tracker", "tracking_uri", "experiment_spec", "local_store_dir", "ensure_experiment", "find_or_create_parent"]

_TEMPLATE = Path(__file__).resolve().parents[2] / "mlruns_template" / "experiments.yaml"
_FALLBACK = {s: {"name": f"expertseg-{s}", "description": "", "tags": {"project": "expertseg", "stage": s}} for s in ("pretrain", "adapt", "evaluate", "compare", "tune", "bench")}


def quiet_store_logs() -> None:
    """MLflow announces every SQLite migration at INFO level; keep warnings only."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def local_store_dir() -> Path:
    """``./mlruns`` in the working directory."""
    return Path.cwd() / "mlruns"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the local SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{local_store_dir() / 'mlflow.db'}"


def experiment_spec(stage: str) -> dict:
    """Name, description and default tags of a stage's experiment, from the template."""
    specs = _FALLBACK
    if _TEMPLATE.is_file():
        specs = (yaml.safe_load(_TEMPLATE.read_text()) or {}).get("experiments", _FALLBACK)
    return specs.get(stage, _FALLBACK.get(stage, {"name": f"expertseg-{stage}", "tags": {}}))


class Tracker:
    """One tracked run.

    Args:
        run_dir: the run's folder; the local log goes to ``run_dir/tracking.jsonl``.
        stage: ``pretrain``, ``adapt``, ... (selects the experiment from the template).
        backend: ``"mlflow"`` or ``"local"``.
        experiment: experiment name overriding the template's.
        run_name: MLflow run name.
        tags: run tags.
        parent_run_id: attach as a child of this run (from any process or machine).
        resume_run_id: continue logging into this existing run (``--resume``).
        retries: attempts per MLflow call before recording locally.
    """

    def __init__(self, *, run_dir, stage: str, backend: str = "mlflow", experiment: str = "", run_name: str | None = None, tags: dict | None = None, parent_run_id: str | None = None, resume_run_id: str | None = None, retries: int = 3):
        if backend not in ("mlflow", "local"):
            raise ValueError(f"backend must be 'mlflow' or 'local', got {backend!r}")
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.backend = backend
        self.experiment = experiment
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.parent_run_id = parent_run_id
        self.resume_run_id = resume_run_id
        self.retries = retries
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.uri: str | None = None
        self.client = None
        self.degraded = False
        self._log_path = self.run_dir / "tracking.jsonl"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Tracker":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._local("start", stage=self.stage, tags=self.tags, parent_run_id=self.parent_run_id, time=time.time())
        if self.backend == "mlflow":
            self._start_mlflow()
            self._local("mlflow", uri=self.uri, run_id=self.run_id, experiment_id=self.experiment_id)
        return self

    def end(self, status: str = "FINISHED") -> None:
        self._local("end", status=status, time=time.time())
        if self.client is not None and self.run_id:
            self._call(self.client.set_terminated, self.run_id, status)

    def __enter__(self) -> "Tracker":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        self.end(status)

    # -- logging --------------------------------------------------------------------------------
    def log_params(self, params: dict) -> None:
        params = {k: _param_value(v) for k, v in params.items()}
        self._local("params", params=params)
        if self.client is not None:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self._call(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        self._local("metrics", step=step, metrics=metrics)
        if self.client is not None and metrics:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            self._call(self.client.log_batch, self.run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])

    def set_tags(self, tags: dict) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        self.tags.update(tags)
        self._local("tags", tags=tags)
        if self.client is not None:
            from mlflow.entities import RunTag

            self._call(self.client.log_batch, self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        path = Path(path)
        self._local("artifact", path=str(path), artifact_path=artifact_path)
        if self.client is not None:
            fn = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
            self._call(fn, self.run_id, str(path), artifact_path)

    def log_dataset(self, manifest, *, context: str = "training") -> None:
        """Log the dataset's label table as an MLflow dataset input (name, digest, source)."""
        self._local("dataset", name=manifest.spec.name, digest=manifest.fingerprint(), source=str(manifest.root), context=context)
        if self.client is None:
            return
        import mlflow
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(pd.DataFrame(manifest.records()), source=str(manifest.root), name=manifest.spec.name or manifest.root.name, digest=manifest.fingerprint())
            entity = ds._to_mlflow_entity()
        self._call(self.client.log_inputs, self.run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def register_model(self, *, artifact_path: str, name: str, alias: str, tags: dict | None = None, description: str = "") -> str | None:
        """Register ``runs:/<run>/<artifact_path>`` (already logged) as a version of ``name`` with ``alias``.

        Returns the version, or ``None`` when tracking is local or the registry failed.
        """
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if self.client is None:
            self._local("register", name=name, alias=alias, tags=tags, version=None)
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self._call(self.client.create_registered_model, name, description=description or None)
        source = f"{self._artifact_root()}/{artifact_path}"
        mv = self._call(self.client.create_model_version, name, source=source, run_id=self.run_id, tags=tags, description=description or None)
        if mv is None:
            return None
        self._call(self.client.set_registered_model_alias, name, alias, mv.version)
        self._local("register", name=name, alias=alias, tags=tags, version=str(mv.version))
        return str(mv.version)

    def ui_hint(self) -> str:
        """Where to find the run."""
        if self.client is None or not self.run_id:
            return f"local log: {self._log_path}"
        uri = self.uri
        if uri.startswith("sqlite:"):
            return f"MLflow run {self.run_id} (experiment {self.experiment_id}); browse with: mlflow ui --backend-store-uri {uri}"
        return f"MLflow run {self.run_id}: {uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    # -- internals ------------------------------------------------------------------------------
    def _start_mlflow(self) -> None:
        uri = tracking_uri()
        self.uri = uri
        remote = uri.startswith(("http://", "https://"))
        if remote:
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        elif uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mlflow
            from mlflow import MlflowClient
        quiet_store_logs()

        mlflow.set_tracking_uri(uri)
        spec = experiment_spec(self.stage)
        try:
            client = MlflowClient(tracking_uri=uri)
            exp_id = ensure_experiment(client, stage=self.stage, experiment=self.experiment)
            tags = {**spec.get("tags", {}), **self.tags}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            if self.resume_run_id:
                run = client.get_run(self.resume_run_id)
                client.update_run(self.resume_run_id, status="RUNNING")
                exp_id = run.info.experiment_id
            else:
                run = client.create_run(exp_id, run_name=self.run_name, tags=tags)
        except Exception as err:  # noqa: BLE001 - any failure to reach the store is the user's to fix
            raise TrackingError(
                f"cannot use the MLflow tracking store {uri} ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); "
                "start the server or fix MLFLOW_TRACKING_URI, or pass --tracking local"
            ) from None
        self.client = client
        self.experiment_id = exp_id
        self.run_id = run.info.run_id

    def _artifact_root(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def _call(self, fn, *args, **kwargs):
        delay = 0.5
        for attempt in range(self.retries):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - a tracker fault must never kill training
                if attempt + 1 == self.retries:
                    if not self.degraded:
                        warnings.warn(f"MLflow call {getattr(fn, '__name__', fn)} failed ({type(err).__name__}: {str(err)[:120]}); continuing with the local log {self._log_path}", RuntimeWarning, stacklevel=3)
                    self.degraded = True
                    self._local("tracker_error", call=getattr(fn, "__name__", str(fn)), error=f"{type(err).__name__}: {str(err)[:300]}")
                    return None
                time.sleep(delay)
                delay *= 2

    def _local(self, event: str, **data) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, **data}, default=str) + "\n")


def _param_value(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= 6000 else text[:5997] + "..."


def ensure_experiment(client, *, stage: str, experiment: str = "") -> str:
    """The id of the stage's experiment, created from the template when missing.

    With a SQLite store, artifacts go beside the database, ``<db folder>/artifacts/<experiment>``
    (absolute), so the store and its artifacts move together.
    """
    spec = experiment_spec(stage)
    name = experiment or spec["name"]
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if client.tracking_uri.startswith("sqlite:///"):
        location = (Path(client.tracking_uri[len("sqlite:///") :]).parent / "artifacts" / name).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={**spec.get("tags", {}), "mlflow.note.content": spec.get("description", "")})
    except Exception:  # noqa: BLE001 - another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_or_create_parent(*, stage: str, run_name: str, tags: dict, key: str, experiment: str = "") -> str | None:
    """The id of the parent run tagged ``key=tags[key]`` and ``role=parent`` in the stage's experiment,
    created when missing (e.g. one parent run per new doctor). ``None`` if MLflow is unusable."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    quiet_store_logs()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    spec = experiment_spec(stage)
    exp_id = ensure_experiment(client, stage=stage, experiment=experiment)
    value = str(tags[key]).replace("'", "")
    found = client.search_runs([exp_id], filter_string=f"tags.{key} = '{value}' and tags.role = 'parent'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=run_name, tags={**spec.get("tags", {}), **{k: str(v) for k, v in tags.items()}, "role": "parent"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


class NullTracker(Tracker):
    """A tracker that records nothing: for ranks other than 0 in distributed training."""

    def __init__(self):
        super().__init__(run_dir=Path("."), stage="none", backend="local")

    def start(self):
        return self

    def end(self, status: str = "FINISHED") -> None:
        pass

    def _local(self, event: str, **data) -> None:
        pass


def registry_name(dataset_name: str) -> str:
    """A registry-safe model name: ``expertseg-<dataset>`` without ``/ : . % " '``."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in (dataset_name or "dataset"))
    return f"expertseg-{safe}"
