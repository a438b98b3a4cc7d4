"""The annotation page's JSON API, as a plain object: ``handle(method, path, query, body, token)``.

The web server (:mod:`experts.annotation.server`) only moves bytes; everything a request does is
here, so a 3D Slicer or napari plugin can call the same API over HTTP and tests need no browser.
Every ``/api/`` call must carry the session token (header ``X-Expertseg-Token`` or ``?token=``).
Requests name cases by id (never a path), classes by name or index, points in the input file's voxel
indices ``[x, y, z]`` (or world mm, RAS, with ``"coordinates": "world"``).

===========================  ==========================================================================
``GET  /api/status``         dataset, expert, the model's experts, classes, the adaptation's progress
``GET  /api/cases``          ``[{case, split, state}]``: untouched / in progress / saved / locked
``POST /api/load``           ``{case, class?, start?}``: open a case (start: an expert id or "nearest")
``GET  /api/volume?case=``   the image (channel 0) as float32, x fastest (``X-Shape: X,Y,Z``)
``GET  /api/mask?case=``     the current label (uint8, one value per class), same layout
``POST /api/interact``       ``{case, class, tool: click|scribble|box|erase, points, positive?, radius_mm?}``
``POST /api/undo``, ``redo``  ``{case, class}``
``POST /api/save``           ``{case, mode?: dense|partial}``: write the label into the dataset
``POST /api/adapt``          start "learn my style" on the saved cases (background); progress in status
``GET  /api/suggest``        the case to label next (:func:`experts.selection.suggest_cases`)
===========================  ==========================================================================

Errors answer ``{"error": "<one line>"}`` with 400 (bad request: malformed body, a point outside
the volume, an unknown class or tool), 403 (no or wrong token), 404 (unknown route or case), 409
(a save or an adaptation already running; an existing label kept) or 413 (a body over 1 MiB).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experts.annotation.labels import MODES, compose_label
from experts.annotation.store import AnnotationStore, SaveInProgress
from experts.errors import ConfigError, DatasetError, ExpertsegError, shorten

__all__ = ["AnnotationService", "ApiError", "Response", "MAX_BODY"]

MAX_BODY = 1 << 20
TOOLS = ("click", "scribble", "box", "erase")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)


@dataclass
class _Case:
    """What the page holds for one open case."""

    start: str
    sessions: dict = field(default_factory=dict)  # class index -> InteractiveSession
    history: list = field(default_factory=list)  # the requests, as logged
    dirty: bool = False


class AnnotationService:
    """One doctor annotating one dataset with one interactive model.

    Args:
        model: an interactive :class:`~experts.bundle.ModelBundle`.
        data: the dataset folder.
        expert: the doctor's expert id (their labels go to ``labelsTr/<expert>/``).
        token: the session token (default: a random one, :attr:`token`).
        learn_steps: adaptation steps of "learn my style".
        out: where each learned model is saved (``<out>/model``), or None.
        device: where the network runs.
    """

    def __init__(self, model, data, expert: str, *, token: str | None = None, learn_steps: int = 60, out: str | Path | None = None, device: str = "cpu"):
        if not getattr(model.network, "prompt_channels", 0):
            raise ConfigError("the model takes no prompts; pass an interactive model (expertseg pretrain --interactive, models:/<name>@interactive)")
        self.store = AnnotationStore(data, expert)
        spec = self.store.manifest.spec
        if list(model.plan.class_names) != list(spec.class_names):
            raise ConfigError(f"the model segments {', '.join(model.plan.class_names)}, the dataset {', '.join(spec.class_names)}; pass a model trained on this dataset")
        self.model, self.expert, self.device = model, expert, device
        self.start_model = model  #: what every "learn my style" learns from (all saved cases at once)
        self.token = token or secrets.token_urlsafe(18)
        self.learn_steps, self.out = int(learn_steps), (Path(out) if out else None)
        self.cases: dict[str, _Case] = {}
        self.version = 0
        self.adapting = {"state": "idle", "step": 0, "steps": 0, "message": "", "info": None}
        self._lock = threading.RLock()
        self._saving = threading.Lock()
        self._suggestion: dict | None = None

    # --- dispatch --------------------------------------------------------------------------------
    def handle(self, method: str, path: str, *, query: dict | None = None, body: bytes = b"", token: str | None = None) -> Response:
        """Answer one request; never raises."""
        routes = {("GET", "/api/status"): self.status, ("GET", "/api/cases"): self.case_list, ("POST", "/api/load"): self.load,
                  ("GET", "/api/volume"): self.volume, ("GET", "/api/mask"): self.mask_bytes, ("POST", "/api/interact"): self.interact,
                  ("POST", "/api/undo"): self.undo, ("POST", "/api/redo"): self.redo, ("POST", "/api/save"): self.save,
                  ("POST", "/api/adapt"): self.adapt, ("GET", "/api/suggest"): self.suggest}
        try:
            if not (isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())):
                raise ApiError(403, "missing or wrong session token; open the page from the address 'expertseg annotate' printed")
            if (method, path) not in routes:
                raise ApiError(404, f"no API call {method} {shorten(path)}; see the API table in the README")
            args = dict(query or {}) if method == "GET" else _json_body(body)
            out = routes[(method, path)](args)
            return out if isinstance(out, Response) else Response(200, _dumps(out))
        except ApiError as err:
            return Response(err.status, _dumps({"error": err.message}))
        except SaveInProgress as err:
            return Response(409, _dumps({"error": str(err)}))
        except ExpertsegError as err:
            return Response(400, _dumps({"error": str(err)}))

    # --- reading ---------------------------------------------------------------------------------
    def status(self, args: dict) -> dict:
        spec = self.store.manifest.spec
        return {"dataset": spec.name, "root": str(self.store.root), "expert": self.expert, "experts": list(self.model.experts), "classes": spec.class_names[1:],
                "has_own_row": self.expert in self.model.experts, "version": self.version, "adapting": dict(self.adapting), "saved": self.store.saved(), "modes": list(MODES)}

    def case_list(self, args: dict) -> dict:
        states = self.store.states()
        for c, work in self.cases.items():
            if work.dirty and states[c] != "locked":
                states[c] = "in progress"
        return {"cases": [{"case": c, "split": self.store.manifest.cases[c].split, "state": s} for c, s in states.items()]}

    def load(self, args: dict) -> dict:
        case = self._case_id(args)
        start = args.get("start") or "nearest"
        with self._lock:
            if start == "nearest":
                start, why = self.nearest()
            elif start not in self.model.experts:
                raise ApiError(400, f"start expert {shorten(start)} is not in the model; choose one of {', '.join(self.model.experts)} or 'nearest'")
            else:
                why = "chosen"
            work = self.cases.get(case)
            if work is None or work.start != start or not work.dirty:
                work = self.cases[case] = _Case(start=start)
            session = self._session(case, self._class(args.get("class")))
        image = self._image(case)
        lo, hi = np.percentile(image.array, [1, 99]).tolist()
        return {"case": case, "start": start, "start_reason": why, "shape": list(image.array.shape), "affine": np.asarray(image.affine).tolist(),
                "spacing": np.linalg.norm(np.asarray(image.affine)[:3, :3], axis=0).tolist(), "window": [lo, hi], **session.state()}

    def volume(self, args: dict) -> Response:
        image = self._image(self._case_id(args))
        data = np.asarray(image.array, dtype=np.float32)
        return Response(200, data.ravel(order="F").tobytes(), "application/octet-stream", {"X-Shape": ",".join(map(str, data.shape))})

    def mask_bytes(self, args: dict) -> Response:
        case = self._case_id(args)
        with self._lock:
            label = self._compose(case, "dense", every_class=False)
        return Response(200, label.ravel(order="F").tobytes(), "application/octet-stream", {"X-Shape": ",".join(map(str, label.shape))})

    # --- interactions ------------------------------------------------------------------------------
    def interact(self, args: dict) -> dict:
        case, cls = self._case_id(args), self._class(args.get("class"))
        tool = args.get("tool")
        if tool not in TOOLS:
            raise ApiError(400, f"tool must be one of {', '.join(TOOLS)}, got {shorten(tool)}")
        points, positive, coords = args.get("points"), args.get("positive", True), args.get("coordinates", "voxel")
        if not isinstance(points, list) or not points:
            raise ApiError(400, f"{tool}: 'points' must be a non-empty list of [x, y, z], got {shorten(points)}")
        if not isinstance(positive, bool):
            raise ApiError(400, f"'positive' must be true or false, got {shorten(positive)}")
        with self._lock:
            session = self._session(case, cls)
            if tool == "click":
                out = session.click(points[0], positive=positive, coordinates=coords)
            elif tool == "scribble":
                out = session.scribble(points, positive=positive, coordinates=coords)
            elif tool == "box":
                if len(points) != 2:
                    raise ApiError(400, f"box: 'points' must be two corners, got {len(points)} point(s)")
                out = session.box(points[0], points[1], positive=positive, coordinates=coords)
            else:
                out = session.erase(points, radius_mm=args.get("radius_mm", 3.0), coordinates=coords)
            self._note(case, {"type": tool, "class": self.model.plan.class_names[cls], "points": points, "positive": positive, "coordinates": coords, **({"radius_mm": args.get("radius_mm", 3.0)} if tool == "erase" else {})})
        return {**out, **session.state()}

    def undo(self, args: dict) -> dict:
        return self._step(args, "undo")

    def redo(self, args: dict) -> dict:
        return self._step(args, "redo")

    def _step(self, args: dict, what: str) -> dict:
        case, cls = self._case_id(args), self._class(args.get("class"))
        with self._lock:
            session = self._session(case, cls)
            out = session.undo() if what == "undo" else session.redo()
            if out.get("undone") or out.get("redone"):
                self._note(case, {"type": what, "class": self.model.plan.class_names[cls]})
        return out

    # --- saving and learning -------------------------------------------------------------------------
    def save(self, args: dict) -> dict:
        case = self._case_id(args)
        mode = args.get("mode", "dense")
        if mode not in MODES:
            raise ApiError(400, f"mode must be 'dense' (the whole mask checked) or 'partial' (only the corrected regions), got {shorten(mode)}")
        if case not in self.cases:
            raise ApiError(400, f"case {case} is not open; load it first")
        if not self._saving.acquire(blocking=False):
            raise ApiError(409, f"a save is in progress; case {case} was not saved, retry when it has finished")
        try:
            with self._lock:
                label = self._compose(case, mode, every_class=mode == "dense")
                work = self.cases[case]
                record = {"start_expert": work.start, "model_id": self.model.model_id, "classes": [self.model.plan.class_names[c] for c in sorted(work.sessions)], "interactions": self._world(case, work.history)}
            entry = self.store.save(case, label, mode=mode, record=record)
            work.dirty = False
            self._suggestion = None
        except DatasetError as err:
            if isinstance(err, SaveInProgress):
                raise
            raise ApiError(409 if "did not write" in str(err) else 400, str(err)) from None
        finally:
            self._saving.release()
        return {"saved": entry["file"], "mode": mode, "when": entry["when"], "log": f"annotations/{self.expert}/{case}.json"}

    def adapt(self, args: dict) -> dict:
        from experts.annotation.learning import learn_style

        cases = self.store.labelled_cases()
        if not cases:
            raise ApiError(400, f"no saved case of {self.expert} yet; save at least one case, then learn")
        with self._lock:
            if self.adapting["state"] == "running":
                raise ApiError(409, "learning is already running; wait for it to finish (see status)")
            self.adapting = {"state": "running", "step": 0, "steps": self.learn_steps, "message": f"learning from {len(cases)} case(s)", "info": None}
            model = self.start_model

        def progress(step, steps):
            self.adapting.update(step=step, steps=steps)

        def work():
            try:
                new, info = learn_style(model, self.expert, cases, steps=self.learn_steps, device=self.device, on_progress=progress)
                if self.out is not None:
                    from experts.bundle import save_bundle

                    save_bundle(self.out / "model", new)
                with self._lock:
                    self.model, self.version = new, self.version + 1
                    self.cases = {c: w for c, w in self.cases.items() if w.dirty}
                    self.adapting = {"state": "done", "step": info["steps"], "steps": info["steps"], "message": _learned(info, self.expert), "info": info}
            except Exception as err:  # shown on the page; the model stays as it was
                self.adapting = {"state": "failed", "step": 0, "steps": self.learn_steps, "message": f"learning failed: {type(err).__name__}: {shorten(str(err), 300, quote=False)}", "info": None}

        threading.Thread(target=work, name="learn-my-style", daemon=True).start()
        return {"started": True, "cases": [c.case for c in cases], "steps": self.learn_steps}

    def wait(self, timeout: float = 600.0) -> dict:
        """Block until the adaptation is no longer running (tests, scripts); returns its status."""
        t0 = time.perf_counter()
        while self.adapting["state"] == "running" and time.perf_counter() - t0 < timeout:
            time.sleep(0.05)
        return dict(self.adapting)

    def suggest(self, args: dict) -> dict:
        from experts.annotation.learning import automatic_bundle
        from experts.selection import suggest_cases

        if self._suggestion is None:
            states = self.store.states()
            train = [c for c, f in self.store.manifest.cases.items() if f.split == "train"]
            candidates = [c for c in train if states[c] == "untouched"]
            if not candidates:
                return {"case": None, "reason": "every training case is saved or locked"}
            with self._lock:
                bundle = automatic_bundle(self.model)
            s = suggest_cases(bundle, self.store.manifest, expert=self.expert, k=1, candidates=candidates, labelled=[c for c in train if states[c] == "saved"], device=self.device)
            top = s.ranking[0]
            self._suggestion = {"case": top.case, "strategy": s.strategy, "reason": top.reason()}
        return self._suggestion

    def nearest(self) -> tuple[str, str]:
        """The expert to start from: the doctor's own row once they have one, else the expert
        whose automatic answer agrees best with their saved cases, else the model's first."""
        from experts.annotation.learning import nearest_expert

        if self.expert in self.model.experts:
            return self.expert, "the doctor's own row"
        cases = self.store.labelled_cases()
        if not cases:
            return self.model.experts[0], "no saved case yet: the model's first expert"
        best, scores = nearest_expert(self.model, cases, device=self.device)
        return best, f"closest to the saved cases (Dice {scores[best]:.3f})"

    # --- internals ---------------------------------------------------------------------------------
    def _case_id(self, args: dict) -> str:
        case = args.get("case")
        if not isinstance(case, str) or case not in self.store.manifest.cases:
            raise ApiError(404, f"no case {shorten(case)} in {self.store.root.name}; pick one from /api/cases")
        return case

    def _class(self, value) -> int:
        names = list(self.model.plan.class_names)
        if value is None:
            return 1
        if isinstance(value, str) and value in names[1:]:
            return names.index(value)
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < len(names):
            return value
        raise ApiError(400, f"class {shorten(value)} is not a structure of this dataset; choose one of {', '.join(names[1:])}")

    def _session(self, case: str, cls: int):
        from experts.interactive.session import InteractiveSession

        work = self.cases.get(case)
        if work is None:
            raise ApiError(400, f"case {case} is not open; load it first")
        if cls not in work.sessions:
            work.sessions[cls] = InteractiveSession(self.model, [str(p) for p in self.store.manifest.cases[case].images], work.start, target=cls, device=self.device)
        return work.sessions[cls]

    def _compose(self, case: str, mode: str, *, every_class: bool) -> np.ndarray:
        from experts.interactive.grid import to_input_grid

        if case not in self.cases:
            raise ApiError(400, f"case {case} is not open; load it first")
        if every_class:
            for cls in range(1, len(self.model.plan.class_names)):
                self._session(case, cls)
        sessions = self.cases[case].sessions
        if not sessions:
            return np.zeros(self.store.manifest.cases[case].shape, np.uint8)
        first = next(iter(sessions.values()))

        def back(a):
            return to_input_grid(a, model_affine=first.model_affine, input_affine=first.input_affine, input_shape=first.input_shape)

        regions = [r for s in sessions.values() for r, *_ in s.undo_stack]
        return compose_label({c: s.prob for c, s in sessions.items()}, to_input=back, mode=mode, regions=regions, ignore_label=self.store.manifest.spec.ignore_label)

    def _note(self, case: str, entry: dict) -> None:
        work = self.cases[case]
        work.history.append({**entry, "at": round(time.time(), 3)})
        work.dirty = True

    def _world(self, case: str, history: list) -> list:
        """The logged interactions with their points in world mm as well (DATASET_SPEC rule 10)."""
        affine = np.asarray(self.store.manifest.cases[case].affine, float)
        out = []
        for h in history:
            if "points" in h and h.get("coordinates", "voxel") == "voxel":
                pts = np.asarray(h["points"], float).reshape(-1, 3)
                h = {**h, "world": (np.c_[pts, np.ones(len(pts))] @ affine.T)[:, :3].round(3).tolist()}
            out.append(h)
        return out

    def _image(self, case: str):
        from experts.data.nifti import load_volume

        return load_volume(self.store.manifest.cases[case].images[0])


def _json_body(body: bytes) -> dict:
    if len(body) > MAX_BODY:
        raise ApiError(413, f"request body of {len(body)} bytes is over the {MAX_BODY} byte limit")
    try:
        data = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not JSON ({type(err).__name__}: {shorten(str(err), 80, quote=False)}); send a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _dumps(data) -> bytes:
    return json.dumps(data, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)).encode("utf-8")


def _learned(info: dict, expert: str) -> str:
    """What the page says after "learn my style"."""
    n = len(info["cases"])
    if "left_out_scores" not in info:
        how = f"{info['steps']} steps"
    elif info["steps"] == 0:
        how = f"no step count beat {info['init']}'s row on a left-out case, so it is kept"
    else:
        how = f"{info['steps']} of {info['budget']} steps, the count that scored best on a left-out case"
    return f"learned from {n} case(s) in {info['seconds']:.0f} s ({how}); the page now answers with {expert}'s row"
