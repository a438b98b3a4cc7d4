"""Run tracking: a local JSON log always, MLflow too unless ``--tracking local``.

The local log (``<run>/tracking.jsonl``, one JSON object per line) is the source of truth: it is
written first, so a tracker outage never loses a run. MLflow is reached through ``MlflowClient`` (no
global active run), so trials and children in other processes attach by ``parent_run_id``.

Where the store is and how it is reached: :mod:`pipelines.runtime.store`. A command that tracks
calls :func:`~pipelines.runtime.store.check_tracking` before any work; after that, every tracker
call (registration included) is retried, then recorded locally with a warning, and the run goes on:
an outage never fails a run that has started.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from experts.errors import TrackingError
from pipelines.runtime.store import _REACHED, _brief, _unreachable, check_tracking, ensure_experiment, experiment_spec, mlflow_client, tracking_uri

__all__ = ["Tracker", "NullTracker"]

#: after a tracker call fails, frequent calls (metrics, params, tags) go to the local log only for
#: this long before MLflow is tried again, so training never waits on a dead server.
OUTAGE_COOLDOWN_S = 30


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

    A store that passed :func:`check_tracking` in this process and then fails, even at
    :meth:`start`, is an outage: the call is retried, then recorded in the local log (event
    ``tracker_error``) with one warning, and the run goes on. While the store is failing, each call
    is tried once, and metrics, parameters and tags are not sent at all for
    :data:`OUTAGE_COOLDOWN_S` seconds. A store never checked fails :meth:`start` with
    :class:`TrackingError`.
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
        self.degraded = False  #: some MLflow call could not be made (the local log holds it)
        self.failed_calls = 0
        self._down_since: float | None = None  # monotonic time of the last failure while failing
        self._unsent_artifacts: set[str] = set()
        self._log_path = self.run_dir / "tracking.jsonl"

    @staticmethod
    def probe(cfg) -> None:
        """:func:`check_tracking`: call it at the start of a command that tracks, before any work."""
        check_tracking(cfg)

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
            self._try(self.client.set_terminated, self.run_id, status)

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
                self._try(self.client.log_batch, self.run_id, params=items[i : i + 100], frequent=True)

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        self._local("metrics", step=step, metrics=metrics)
        if self.client is not None and metrics:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            self._try(self.client.log_batch, self.run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()], frequent=True)

    def set_tags(self, tags: dict) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        self.tags.update(tags)
        self._local("tags", tags=tags)
        if self.client is not None:
            from mlflow.entities import RunTag

            self._try(self.client.log_batch, self.run_id, tags=[RunTag(k, v) for k, v in tags.items()], frequent=True)

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        path = Path(path)
        self._local("artifact", path=str(path), artifact_path=artifact_path)
        if self.client is not None:
            fn = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
            sent, _ = self._try(fn, self.run_id, str(path), artifact_path)
            key = artifact_path or path.name
            (self._unsent_artifacts.discard if sent else self._unsent_artifacts.add)(key)

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
        self._try(self.client.log_inputs, self.run_id, datasets=[DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])])

    def register_model(self, *, artifact_path: str, name: str, alias: str, tags: dict | None = None, description: str = "") -> str | None:
        """Register ``runs:/<run>/<artifact_path>`` (already logged) as a version of ``name`` with ``alias``.

        Every registry call goes through the retry-then-local-log path: a registry that fails
        leaves a ``register`` event with ``version: null`` (and the failed calls) in the local log,
        never an exception. Artifacts that did not reach MLflow are not registered.

        Returns the version, or ``None`` when tracking is local or the registry failed.
        """
        tags = {k: str(v) for k, v in (tags or {}).items()}
        what = {"name": name, "alias": alias, "artifact_path": artifact_path, "tags": tags}
        if self.client is None:
            self._local("register", **what, version=None)
            return None
        if artifact_path in self._unsent_artifacts:
            self._local("register", **what, version=None, error=f"the {artifact_path!r} artifacts did not reach MLflow")
            return None
        sent, root = self._try(self._artifact_root)
        sent = sent and self._try(self._ensure_registered_model, name, description)[0]
        mv = None
        if sent:
            sent, mv = self._try(self.client.create_model_version, name, source=f"{root}/{artifact_path}", run_id=self.run_id, tags=tags, description=description or None)
        if not sent or mv is None:
            self._local("register", **what, version=None, error="the model registry could not be reached")
            return None
        aliased, _ = self._try(self.client.set_registered_model_alias, name, alias, mv.version)
        self._local("register", **what, version=str(mv.version), alias_set=aliased)
        return str(mv.version)

    def ui_hint(self) -> str:
        """Where to find the run (and, after an outage, what was not sent)."""
        if self.client is None or not self.run_id:
            hint = f"local log: {self._log_path}"
        elif self.uri.startswith("sqlite:"):
            hint = f"MLflow run {self.run_id} (experiment {self.experiment_id}); browse with: mlflow ui --backend-store-uri {self.uri}"
        else:
            hint = f"MLflow run {self.run_id}: {self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        if self.degraded:
            hint += f"\nwarning: {self.failed_calls} call(s) to MLflow at {self.uri} failed or were not sent (tracker_error in {self._log_path}); the run folder holds everything"
        return hint

    # -- internals ------------------------------------------------------------------------------
    def _start_mlflow(self) -> None:
        uri = tracking_uri()
        self.uri = uri
        checked = uri in _REACHED  # it answered check_tracking: a failure now is an outage
        try:
            client = mlflow_client(uri, create=True)
        except (TrackingError, OSError) as err:
            if not checked:
                raise TrackingError(f"cannot use the MLflow tracking store {uri} ({_brief(err)}); fix MLFLOW_TRACKING_URI, or pass --tracking local") from None
            self._record_failure("mlflow_client", err)
            return
        if checked:
            sent, opened = self._try(self._open_run, client)
            if not sent:
                return
        else:
            try:
                opened = self._open_run(client)
            except Exception as err:  # noqa: BLE001 - any failure to reach the store is the user's to fix
                raise TrackingError(f"cannot use the MLflow tracking store {uri} ({_brief(err)}); start the server or fix MLFLOW_TRACKING_URI, or pass --tracking local") from None
        exp_id, run = opened
        self.client = client
        self.experiment_id = exp_id
        self.run_id = run.info.run_id

    def _open_run(self, client):
        """``(experiment id, run)``: a new run, or the one to resume."""
        spec = experiment_spec(self.stage)
        exp_id = ensure_experiment(client, stage=self.stage, experiment=self.experiment)
        tags = {**spec.get("tags", {}), **self.tags}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        if self.resume_run_id:
            run = client.get_run(self.resume_run_id)
            client.update_run(self.resume_run_id, status="RUNNING")
            return run.info.experiment_id, run
        return exp_id, client.create_run(exp_id, run_name=self.run_name, tags=tags)

    def _artifact_root(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def _ensure_registered_model(self, name: str, description: str) -> None:
        """Create the registered model ``name`` unless it exists (a lost connection is raised)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
            return
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            self.client.create_registered_model(name, description=description or None)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # another run created it first
                raise

    def _try(self, fn, *args, frequent: bool = False, **kwargs) -> tuple[bool, object]:
        """``(sent, result)`` of ``fn(*args, **kwargs)``, retried with back-off; a failure is
        recorded in the local log, never raised. While the store is failing, each call gets one
        attempt, and ``frequent`` ones none for :data:`OUTAGE_COOLDOWN_S` seconds. A call the store
        answered by rejecting it (a bad value, say) is not retried and is no outage."""
        name = getattr(fn, "__name__", str(fn)).lstrip("_")
        failing = self._down_since is not None
        if failing and frequent and time.monotonic() - self._down_since < OUTAGE_COOLDOWN_S:
            self.failed_calls += 1
            self._local("tracker_error", call=name, error="not sent: the tracker was failing", skipped=True)
            return False, None
        delay = 0.5
        for attempt in range(1 if failing else self.retries):
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - a tracker fault must never kill a run
                if attempt + 1 < self.retries and not failing and not _rejected(err):
                    time.sleep(delay)
                    delay *= 2
                    continue
                self._record_failure(name, err)
                return False, None
            if failing:
                self._down_since = None
                self._local("tracker_recovered", call=name)
            return True, result
        return False, None

    def _record_failure(self, call: str, err: BaseException) -> None:
        if not self.degraded:
            warnings.warn(f"MLflow call {call} failed ({_unreachable(err)}); continuing with the local log {self._log_path}", RuntimeWarning, stacklevel=4)
        self.degraded = True
        self.failed_calls += 1
        self._down_since = None if _rejected(err) else time.monotonic()  # a store that refuses is up
        self._local("tracker_error", call=call, error=f"{type(err).__name__}: {str(err)[:300]}")

    def _local(self, event: str, **data) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, **data}, default=str) + "\n")


#: MLflow error codes of a store that answered and refused the call: not an outage
_REJECTIONS = {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"}


def _rejected(err: BaseException) -> bool:
    return getattr(err, "error_code", None) in _REJECTIONS


def _param_value(v) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= 6000 else text[:5997] + "..."


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


