"""Comparing experts and expert-conditioned models on held-out cases.

:class:`ExpertComparison` takes, case by case, the probabilities of a model conditioned on each of
its experts and the experts' dense labels, and accumulates

* three Dice matrices: model conditioned on expert *i* vs expert *j*'s labels (cross-expert), labels
  vs labels (human agreement) and predictions vs predictions (model vs model);
* consensus baselines against every expert: majority vote of the labels (ties get the tie label
  ``K`` and count as background), per-class STAPLE, and the model consensus (argmax of the mean of
  the experts' probabilities), which is also scored against the two label consensuses;
* STAPLE's per-expert sensitivity and specificity (the annotator profile);
* distribution metrics of the set of predictions against the set of raters, per class: GED^2
  (``d = 1 - IoU``), QUBIQ soft Dice of the mean probability, Dmax and Dmatch.

:meth:`ExpertComparison.summary` turns them into JSON-ready tables. :func:`own_label_dice` scores
another model's experts against their own labels.

Conventions: Dice per foreground class; a class absent from both volumes of a pair is left out of
that pair's means (it is neither 0 nor 1); a matrix cell is the mean over classes of the per-class
mean over cases; consensus, profile and distribution metrics need at least two experts' labels on
a case and skip cases with fewer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from experts.consensus import majority_vote, staple
from experts.metrics import dice_match, dice_max, generalized_energy_distance, overlap_metrics, soft_dice

__all__ = ["CONSENSUS_BASELINES", "ExpertComparison", "own_label_dice"]

MAJORITY_VOTE, STAPLE, MODEL_CONSENSUS = "majority vote", "STAPLE", "model consensus"
CONSENSUS_BASELINES = (MAJORITY_VOTE, STAPLE, MODEL_CONSENSUS)
"""Rows of the consensus table, in order."""

GED_CONVENTION = "GED squared (Kohl et al. 2018), d = 1 - IoU, pairs i = j included"
DICE_CONVENTION = "classes absent from both volumes are left out of means"


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the defined values, ``None`` when there is none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _dice(a: np.ndarray, b: np.ndarray, num_classes: int) -> dict[int, float | None]:
    """Foreground class -> Dice of two dense label volumes ``[X, Y, Z]`` (``None``: absent from both)."""
    return {c: m.value for c, m in overlap_metrics(a, b, num_classes=num_classes).dice.items()}


class _DiceMatrix:
    """Per-class Dice of (row, column) pairs, one value per case where the class is present."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, row: str, col: str, dice: Mapping[int, float | None]) -> None:
        for c, v in dice.items():
            if v is not None:
                self.values[(row, col)][c].append(v)

    def table(self, rows: Sequence[str], cols: Sequence[str], classes: Mapping[int, str]) -> dict:
        """``{"rows", "cols", "mean": [R][C], <class name>: [R][C]}``; ``None`` where nothing was scored."""
        out = {"rows": list(rows), "cols": list(cols), "mean": [], **{name: [] for name in classes.values()}}
        for r in rows:
            means, per = [], {name: [] for name in classes.values()}
            for c in cols:
                cell = self.values.get((r, c), {})
                class_means = {classes[k]: _mean(cell.get(k, [])) for k in classes}
                for name, v in class_means.items():
                    per[name].append(v)
                means.append(_mean(class_means.values()))
            out["mean"].append(means)
            for name in classes.values():
                out[name].append(per[name])
        return out

    def per_case(self, row: str, col: str) -> list[float]:
        """Mean over classes of the i-th value of each class, for i up to the longest class's count.

        Values are stored per class, so when a class is absent from both volumes of some case its
        later values pair with other classes' values of the next cases.
        """
        cell = self.values.get((row, col), {})
        n = max((len(v) for v in cell.values()), default=0)
        return [float(np.mean([v[i] for v in cell.values() if i < len(v)])) for i in range(n)]


def _closest(table: dict) -> dict[str, dict]:
    """For each row expert: the column colleague with the highest mean Dice, and that Dice."""
    out = {}
    for i, r in enumerate(table["rows"]):
        best = max(((c, v) for c, v in zip(table["cols"], table["mean"][i]) if c != r and v is not None), key=lambda cv: cv[1], default=(None, None))
        out[r] = {"colleague": best[0], "dice": best[1]}
    return out


def _unique(values: Sequence[str], *, name: str) -> list[str]:
    values = list(values)
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} must not repeat an expert, got {', '.join(map(repr, repeated))} more than once")
    return values


class ExpertComparison:
    """Accumulates the cross-expert comparison of one multi-expert model, case by case.

    Args:
        class_names: names of the classes ``0..K-1``, background first (``K >= 2``).
        model_experts: the model's experts, in the order of the probabilities given to :meth:`add_case`.
        label_experts: the experts whose dense labels may be given; rows and columns of the label
            tables, in this order.

    Attributes:
        num_classes: K, background included; the majority vote's tie label is K.
        classes: foreground class -> name.
        case_ids: the cases added, in order.

    Example::

        comparison = ExpertComparison(class_names=["background", "core", "rim"], model_experts=["a", "b"], label_experts=["a", "b"])
        for case in cases:
            comparison.add_case(case, probabilities=probs[case], labels=labels[case])
        tables = comparison.summary()
    """

    def __init__(self, *, class_names: Sequence[str], model_experts: Sequence[str], label_experts: Sequence[str]) -> None:
        if len(class_names) < 2:
            raise ValueError(f"class_names must name the background and at least one class, got {list(class_names)!r}")
        self.model_experts = _unique(model_experts, name="model_experts")
        self.label_experts = _unique(label_experts, name="label_experts")
        if not self.model_experts:
            raise ValueError("model_experts is empty: the model must have at least one expert to compare")
        self.num_classes = len(class_names)
        self.classes = {c: str(class_names[c]) for c in range(1, self.num_classes)}
        self.case_ids: list[str] = []
        self._model_vs_labels, self._labels_vs_labels, self._model_vs_model = _DiceMatrix(), _DiceMatrix(), _DiceMatrix()
        self._consensus = _DiceMatrix()
        self._profile: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
        self._distribution: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    @property
    def conventions(self) -> dict:
        """The tie label and the GED and Dice conventions, for the record next to the numbers."""
        return {"tie_label": self.num_classes, "ged": GED_CONVENTION, "dice": DICE_CONVENTION}

    def add_case(self, case_id: str, *, probabilities: np.ndarray, labels: Mapping[str, np.ndarray]) -> None:
        """Add one case.

        Args:
            case_id: the case's id (cases must not repeat).
            probabilities: float ``[E, K, X, Y, Z]``, the model conditioned on each of ``model_experts``
                (in that order); each expert's prediction is the argmax over K.
            labels: expert -> dense int label ``[X, Y, Z]`` (values ``0..K-1``), for the experts of
                ``label_experts`` who labelled this case (any number, in any order).

        Raises:
            ValueError: a repeated case, probabilities of the wrong shape, an expert not in
                ``label_experts`` or a label of another shape.
        """
        probabilities = self._check(case_id, probabilities, labels)
        labels = {e: np.asarray(labels[e]) for e in self.label_experts if e in labels}
        preds = dict(zip(self.model_experts, probabilities.argmax(axis=1).astype(np.min_scalar_type(self.num_classes))))
        self.case_ids.append(case_id)
        self._add_matrices(preds, labels)
        if len(labels) >= 2:
            raters = np.stack(list(labels.values()))
            self._add_consensus(raters, labels, probabilities)
            self._add_distribution(preds, raters, probabilities)

    def _check(self, case_id: str, probabilities, labels: Mapping[str, np.ndarray]) -> np.ndarray:
        if case_id in self.case_ids:
            raise ValueError(f"case {case_id!r} was already added; each case is compared once")
        probabilities = np.asarray(probabilities)
        expected = (len(self.model_experts), self.num_classes)
        if probabilities.ndim != 5 or probabilities.shape[:2] != expected:
            raise ValueError(f"case {case_id!r}: probabilities must be [E, K, X, Y, Z] with E, K = {expected}, got shape {probabilities.shape}")
        for e, lab in labels.items():
            if e not in self.label_experts:
                raise ValueError(f"case {case_id!r}: labels of {e!r}, who is not one of label_experts {self.label_experts}; add them there")
            if np.shape(lab) != probabilities.shape[2:]:
                raise ValueError(f"case {case_id!r}: labels of {e!r} have shape {np.shape(lab)}, the probabilities {probabilities.shape[2:]}")
        return probabilities

    def _add_matrices(self, preds: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
        k = self.num_classes
        for i in self.model_experts:
            for j, lab in labels.items():
                self._model_vs_labels.add(i, j, _dice(preds[i], lab, k))
            for j in self.model_experts:
                if i != j:
                    self._model_vs_model.add(i, j, _dice(preds[i], preds[j], k))
        for i in labels:
            for j in labels:
                if i != j:
                    self._labels_vs_labels.add(i, j, _dice(labels[i], labels[j], k))

    def _add_consensus(self, raters: np.ndarray, labels: dict[str, np.ndarray], probabilities: np.ndarray) -> None:
        k, dtype = self.num_classes, np.min_scalar_type(self.num_classes)
        vote = majority_vote(raters, num_classes=k, tie_label=k)
        vote = np.where(vote == k, 0, vote).astype(dtype)  # ties count as background
        st = staple(raters, num_classes=k)
        st_labels = st.labels.astype(dtype)
        model = probabilities.mean(axis=0).argmax(axis=0).astype(dtype)
        for name, estimate in ((MAJORITY_VOTE, vote), (STAPLE, st_labels), (MODEL_CONSENSUS, model)):
            for j, lab in labels.items():
                self._consensus.add(name, j, _dice(estimate, lab, k))
        self._consensus.add(MODEL_CONSENSUS, MAJORITY_VOTE, _dice(model, vote, k))
        self._consensus.add(MODEL_CONSENSUS, STAPLE, _dice(model, st_labels, k))
        for r, e in enumerate(labels):
            for c, perf in st.profile[r].items():
                if c == 0:
                    continue
                for key, mv in perf.items():
                    if mv.value is not None:
                        self._profile[e][self.classes[c]][key].append(mv.value)

    def _add_distribution(self, preds: dict[str, np.ndarray], raters: np.ndarray, probabilities: np.ndarray) -> None:
        for c, name in self.classes.items():
            pm = np.stack([preds[e] == c for e in self.model_experts])
            rm = raters == c
            self._distribution[name]["ged"].append(generalized_energy_distance(pm, rm).squared)
            sd = soft_dice(probabilities[:, c].mean(0), rm)
            for key, mv in (("soft_dice", sd), ("dmax", dice_max(pm, rm)), ("dmatch", dice_match(pm, rm))):
                if mv.value is not None:
                    self._distribution[name][key].append(mv.value)

    def summary(self) -> dict:
        """The comparison's tables, JSON-ready (no NaN: undefined values are ``None``).

        Returns:
            ``model_vs_labels`` (rows ``model_experts``, cols ``label_experts``), ``labels_vs_labels``
            and ``model_vs_model`` (diagonals ``None``), ``consensus`` (rows
            :data:`CONSENSUS_BASELINES`, cols ``label_experts`` + majority vote + STAPLE): tables
            ``{"rows", "cols", "mean", <class name>}`` of mean Dice; ``staple_profile``:
            ``{expert: {class: {"sensitivity", "specificity"}}}``; ``distribution``:
            ``{class: {"ged", "soft_dice", "dmax", "dmatch"}}`` (means over cases);
            ``own_labels_per_case``: ``{expert: [Dice per case]}`` of each expert's model against
            that expert's labels; ``closest_colleague``: ``{expert: {"colleague", "dice"}}``, the
            other expert whose labels agree most with theirs.
        """
        classes, models, labelled = self.classes, self.model_experts, self.label_experts
        agreement = self._labels_vs_labels.table(labelled, labelled, classes)
        return {
            "model_vs_labels": self._model_vs_labels.table(models, labelled, classes),
            "labels_vs_labels": agreement,
            "model_vs_model": self._model_vs_model.table(models, models, classes),
            "consensus": self._consensus.table(list(CONSENSUS_BASELINES), labelled + [MAJORITY_VOTE, STAPLE], classes),
            "staple_profile": {e: {c: {key: _mean(v) for key, v in per.items()} for c, per in pc.items()} for e, pc in self._profile.items()},
            "distribution": {c: {key: _mean(v) for key, v in per.items()} for c, per in self._distribution.items()},
            "own_labels_per_case": {e: self._model_vs_labels.per_case(e, e) for e in models if e in labelled},
            "closest_colleague": _closest(agreement),
        }


def own_label_dice(
    cases: Iterable[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    *,
    num_classes: int,
    pooled_expert: str | None = "pooled",
) -> dict[str, float | None]:
    """Mean Dice of each expert's predictions against that expert's own labels, over cases.

    Args:
        cases: per case, ``(predictions, labels)``: expert -> int label ``[X, Y, Z]`` predicted by the
            model conditioned on that expert, and expert -> dense int label ``[X, Y, Z]``. A lazy
            iterable (a generator predicting one case at a time) keeps one case in memory.
        num_classes: K, background included.
        pooled_expert: the name of an expert trained on every expert's labels pooled; its
            prediction is scored against every labelled expert. ``None``: no such expert.

    Returns:
        expert -> mean over cases of the case's mean Dice over foreground classes (classes absent
        from both volumes left out; ``None`` when nothing was defined), for every expert scored on
        at least one case.
    """
    scores: dict[str, list[float | None]] = defaultdict(list)
    for predictions, labels in cases:
        for e, prediction in predictions.items():
            for t in labels if e == pooled_expert else [e]:
                if t in labels:
                    scores[t].append(_mean(_dice(prediction, labels[t], num_classes).values()))
    return {e: _mean(v) for e, v in scores.items()}
