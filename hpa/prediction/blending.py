"""Blending: gathering prediction files per model, checking they were made against the same folds
and labels, fitting a blend (model weights, then thresholds on the blended OOF), choosing the
weighting and threshold method by cross-validation inside the OOF rows, and the submission check.
Greedy and bagged ensemble selection and the cut-point F1 are ours: no library here has them."""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.core.checks import require_file
from hpa.core.digests import file_sha256, ids_sha256
from hpa.data import layout
from hpa.data.labels import NUM_CLASSES, labels_matrix, read_folds, read_label_tables
from hpa.data.layout import parse_prediction_name
from hpa.data.predictions import read_predictions
from hpa.errors import ConfigError, LabelError, PredictionError, RunError
from hpa.prediction.metrics import macro_f1
from hpa.prediction.thresholds import apply_thresholds, fit_thresholds


def expand(patterns: list[str]) -> list[Path]:
    """Quoted glob patterns or plain paths -> sorted unique paths; a pattern that matches nothing
    is an error (a typo should not silently drop a model)."""
    out: set[Path] = set()
    for pat in patterns:
        hits = glob.glob(str(pat))
        if not hits:
            raise PredictionError(f"{pat}: no prediction file matches")
        out.update(Path(h) for h in hits)
    return sorted(out)


def concat_oof(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """OOF files of the folds of one model -> all their rows; an Id in two folds is an error."""
    ids, probs, seen = [], [], {}
    for p in paths:
        i, pr = read_predictions(p)
        for sid in i:
            if sid in seen:
                raise PredictionError(f"{p}: Id {sid!r} is also in {seen[sid]} (folds must not overlap)")
            seen[sid] = p
        ids += i
        probs.append(pr)
    return ids, np.concatenate(probs)


def mean_test(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Test files of the folds of one model -> their mean; all must hold the same Ids."""
    ids0, acc = None, None
    for p in paths:
        ids, pr = read_predictions(p)
        if ids0 is None:
            ids0, acc = ids, pr.copy()
            continue
        if set(ids) != set(ids0):
            raise PredictionError(f"{p}: its Ids differ from {paths[0]} ({len(set(ids) ^ set(ids0))} differ)")
        order = {s: k for k, s in enumerate(ids)}
        acc += pr[[order[s] for s in ids0]]
    return ids0, acc / len(paths)


def group_by_model(paths: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[parse_prediction_name(p)["model"]].append(p)
    return dict(sorted(groups.items()))


def align(ids: list[str], probs: np.ndarray, order: list[str], what: Path | str) -> np.ndarray:
    """Rows of `probs` reordered to `order`; every Id of `order` must be present, and no other."""
    index = {s: k for k, s in enumerate(ids)}
    missing = [s for s in order if s not in index]
    if missing:
        raise PredictionError(f"{what}: {len(missing)} Ids missing, e.g. {missing[0]!r}")
    if len(ids) != len(order):
        extra = sorted(set(ids) - set(order))
        raise PredictionError(f"{what}: {len(extra)} unexpected Ids, e.g. {extra[0]!r}")
    return probs[[index[s] for s in order]]


def restrict(ids: list[str], probs: np.ndarray, keep: set[str]) -> tuple[list[str], np.ndarray]:
    rows = [k for k, s in enumerate(ids) if s in keep]
    return [ids[k] for k in rows], probs[rows]


def labels_for(ids: list[str], label_files: list[Path]) -> np.ndarray:
    lab = read_label_tables(label_files)
    index = dict(zip(lab["Id"], range(len(lab))))
    missing = [s for s in ids if s not in index]
    if missing:
        raise PredictionError(f"{', '.join(map(str, label_files))}: no labels for {len(missing)} predicted Ids, e.g. "
                              f"{missing[0]!r}")
    return labels_matrix(lab)[[index[s] for s in ids]]


def read_sidecars(paths: list[Path]) -> dict[Path, dict]:
    """The `.json` sidecars that predict_tta.py writes beside its files (absent for files made elsewhere)."""
    out = {}
    for p in paths:
        side = layout.sidecar_path(p)
        if side.is_file():
            try:
                out[Path(p)] = json.loads(side.read_text())
            except ValueError as e:
                raise PredictionError(f"{side}: unreadable sidecar ({e})") from None
    return out


def read_blend_summary(path: Path) -> dict:
    """A blend's blend.json (run_blend writes it), checked whole: what a recipe's ensemble is rebuilt
    from (hpa.prediction.ensemble.from_recipe, export_bundle) must be there and of its type, or one line
    names the key; a file cut short or not JSON is one line naming it."""
    path = require_file(path, "blend summary (blend.json)", RunError)
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not a blend summary: cut short or not JSON ({' '.join(str(e).split())[:120]}); "
                       "blend again (blend.py, or run the recipe to the end)") from None
    if not isinstance(summary, dict):
        raise RunError(f"{path}: not a blend summary (a JSON {type(summary).__name__}, not a mapping)")
    if "test_files" not in summary:
        raise RunError(f"{path}: written by an older version (it does not list the files it blended); blend again "
                       "with this version")
    models = summary.get("models")
    expect = {"models": isinstance(models, list) and models and all(isinstance(m, str) for m in models),
              "weighting": isinstance(summary.get("weighting"), str),
              "weights": isinstance(summary.get("weights"), list) and len(summary["weights"]) == len(models or [])
              and all(isinstance(w, int | float) and not isinstance(w, bool) for w in summary["weights"]),
              "thresholds": isinstance(summary.get("thresholds"), list) and len(summary["thresholds"]) == NUM_CLASSES
              and all(isinstance(t, int | float) and not isinstance(t, bool) for t in summary["thresholds"]),
              "test_files": isinstance(summary["test_files"], dict) and all(
                  isinstance(summary["test_files"].get(m), list) and summary["test_files"][m] for m in models or [])}
    wrong = [k for k, ok in expect.items() if not ok]
    if wrong:
        raise RunError(f"{path}: {wrong[0]}: not as blend.py writes it ({summary.get(wrong[0])!r:.120}); blend again")
    return summary


def check_oof_provenance(oof_paths: list[Path], label_files: list[Path], allow_missing: bool,
                         test_paths: list[Path] | None = None, folds_csv: Path | None = None) -> list[str]:
    """Refuse OOF files made against other labels or other folds than each other, OOF files that do
    not cover every Id their folds table puts in a fold, and test files made by other runs, checkpoints
    or test-time settings than the OOF files of the same model and fold. Everything is compared by
    content (hashes in the sidecars), never by location. `folds_csv`, when given and unchanged, names
    an example of a missing Id. Returns notes for the report (files without a sidecar cannot be
    checked; missing coverage when `allow_missing`)."""
    for f in label_files:
        require_file(Path(f).absolute(), "table", LabelError)
    sides = read_sidecars(oof_paths)
    notes = []
    unchecked = [p for p in oof_paths if p not in sides]
    if unchecked:
        notes.append(f"{len(unchecked)} OOF file(s) have no provenance sidecar (not made by predict_tta.py), so their "
                     f"folds and labels were not checked, e.g. {unchecked[0]}")
    if not sides:
        return notes
    given = {file_sha256(f) for f in label_files}
    for p, s in sides.items():
        for name, sha in s.get("labels", {}).items():
            if sha not in given:
                raise RunError(f"{p}: predicted by a run trained with other labels than "
                               f"{', '.join(map(str, label_files))} (its {name} differs); retrain, or pass the labels "
                               "it was trained with")
    first = next(iter(sides))
    for p, s in sides.items():
        if s.get("folds_sha256") != sides[first].get("folds_sha256"):
            raise RunError(f"{p}: made against other folds than {first}; every model's OOF must come from the same "
                           "folds table")
    side = sides[first]
    expected = None
    if folds_csv is not None and Path(folds_csv).is_file() and file_sha256(folds_csv) == side["folds_sha256"]:
        expected = {i for i, f in read_folds(folds_csv).items() if f >= 0}
    for model, paths in group_by_model(oof_paths).items():
        have = set()
        for p in paths:
            have.update(read_predictions(p)[0])
        if ids_sha256(sorted(have)) == side.get("folded_ids_sha256"):
            continue
        example = f", e.g. {sorted(expected - have)[0]!r}" if expected and expected - have else ""
        msg = (f"model {model}: its OOF files cover {len(have)} Ids, not the {side.get('n_folded')} that their folds "
               f"table puts in a fold{example} (is a fold's file absent?)")
        if not allow_missing:
            raise RunError(msg + "; predict every fold, or pass --allow-missing-oof to blend on the rows present")
        notes.append(msg)
    check_test_producers(sides, test_paths or [])
    return notes


def check_test_producers(oof_sides: dict[Path, dict], test_paths: list[Path]) -> None:
    """Each model's test file of fold k must come from the same checkpoint and test-time settings as
    its OOF file of fold k (a stale test file, or one of other runs under the same name, is refused)."""
    oof_by = {(parse_prediction_name(p)["model"], parse_prediction_name(p)["fold"]): (p, s)
              for p, s in oof_sides.items()}
    test_sides = read_sidecars(test_paths)
    for p in test_paths:
        name = parse_prediction_name(p)
        key = (name["model"], name["fold"])
        if key not in oof_by:
            continue  # the model's fold sets are compared by the caller
        oof_path, oof_side = oof_by[key]
        theirs = test_sides.get(Path(p), {}).get("producer")
        if theirs != oof_side.get("producer"):
            what = "has no provenance sidecar" if theirs is None else \
                f"was made by {describe_difference(oof_side.get('producer') or {}, theirs)}"
            raise RunError(f"{p}: {what}, unlike {oof_path}; predict the model's OOF and test files together "
                           "(predict_tta.py) so they come from the same checkpoints and TTA")


def describe_difference(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "another " + ", ".join(f"{k} ({b.get(k)!s:.20} vs {a.get(k)!s:.20})" for k in keys)


def best_cut_macro_f1(probs: np.ndarray, y: np.ndarray, bins: int = 100, positives: np.ndarray | None = None) -> float:
    """Macro F1 at each class's best threshold among the cut points k / `bins`, in two bincounts:
    the score ensemble selection maximises, quick enough for the thousands of evaluations that
    cross-validated selection makes (an exact per-class search costs ~20x more). `positives`, the
    flat indices of y's positives, saves recomputing them on every call."""
    n, c = probs.shape
    idx = (probs * bins).astype(np.int32)
    np.minimum(idx, bins - 1, out=idx)
    idx += (np.arange(c) * bins).astype(np.int32)
    flat = idx.ravel()
    positives = np.flatnonzero(y.ravel() > 0.5) if positives is None else positives
    pos = np.bincount(flat[positives], minlength=c * bins).reshape(c, bins)
    tot = np.bincount(flat, minlength=c * bins).reshape(c, bins)
    tp = pos[:, ::-1].cumsum(1)[:, ::-1]  # predicted positive: every bin from the cut up
    pp = tot[:, ::-1].cumsum(1)[:, ::-1]
    npos = pos.sum(1, keepdims=True)
    f1 = np.where(pp + npos > 0, 2 * tp / np.maximum(pp + npos, 1), 0.0)
    return float(f1.max(1).mean())


def greedy_weights(oofs: list[np.ndarray], y: np.ndarray, rounds: int = 20, patience: int = 5) -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004): start from the best
    single model and repeatedly add the model whose inclusion gives the best OOF macro F1 at
    fitted thresholds (`best_cut_macro_f1`), for at most `rounds` rounds, stopping early after
    `patience` rounds without a better score. Weights are the selection counts of the best-scoring
    round, so the blend never scores below the best single model on these rows."""
    oofs = [np.asarray(o, np.float32) for o in oofs]  # half the memory traffic; scores are binned anyway
    positives = np.flatnonzero(y.ravel() > 0.5)
    counts = np.zeros(len(oofs))
    total = np.zeros_like(oofs[0])
    best, best_counts, since = -1.0, None, 0
    for _ in range(rounds):
        scale = np.float32(1 / (counts.sum() + 1))
        scores = [best_cut_macro_f1((total + o) * scale, y, positives=positives) for o in oofs]
        k = int(np.argmax(scores))
        counts[k] += 1
        total += oofs[k]
        since += 1
        if scores[k] > best:
            best, best_counts, since = scores[k], counts.copy(), 0
        if since >= patience:
            break
    return best_counts / best_counts.sum()


def bagged_greedy_weights(oofs: list[np.ndarray], y: np.ndarray, rounds: int = 20, bags: int = 10,
                          seed: int = 0) -> np.ndarray:
    """Bagged ensemble selection (Caruana et al. 2004, "bagged ensemble selection"): greedy selection
    on `bags` random halves of the model library, weights averaged, which they report reduces the
    overfitting of selection to the hillclimb set."""
    m = len(oofs)
    if m < 3:  # halves of 1 or 2 models are single models: nothing to bag
        return greedy_weights(oofs, y, rounds)
    rng = np.random.default_rng(seed)
    w = np.zeros(m)
    for _ in range(bags):
        pick = np.sort(rng.choice(m, size=(m + 1) // 2, replace=False))
        w[pick] += greedy_weights([oofs[k] for k in pick], y, rounds)
    return w / w.sum()


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


WEIGHTINGS = ("equal", "logit", "greedy", "bagged")  # from the fewest fitted parameters to the most


@dataclass
class Blend:
    """A fitted blend: model weights, the space they average in, and per-class thresholds."""
    weighting: str
    method: str
    weights: np.ndarray
    thresholds: np.ndarray

    def combine(self, preds: list[np.ndarray]) -> np.ndarray:
        if self.weighting == "logit":
            return 1 / (1 + np.exp(-sum(w * logit(p) for w, p in zip(self.weights, preds))))
        return sum(w * p for w, p in zip(self.weights, preds))


def fit_blend(oofs: list[np.ndarray], y: np.ndarray, weighting: str, method: str, rounds: int = 20,
              seed: int = 0) -> Blend:
    """Fit weights, then thresholds on the blended rows. Cross-validation and the final fit both
    call this, so they cannot drift apart."""
    if weighting in ("equal", "logit") or len(oofs) == 1:
        w = np.full(len(oofs), 1 / len(oofs))
    elif weighting == "greedy":
        w = greedy_weights(oofs, y, rounds)
    elif weighting == "bagged":
        w = bagged_greedy_weights(oofs, y, rounds, seed=seed)
    else:
        raise ConfigError(f"--weights {weighting}: choose from {', '.join(WEIGHTINGS)} or auto")
    blend = Blend(weighting, method, w, np.zeros(y.shape[1]))
    blend.thresholds = fit_thresholds(blend.combine(oofs), y, method)
    return blend


def score(blend: Blend, preds: list[np.ndarray], y: np.ndarray) -> float:
    """Macro F1 as the submission is made: thresholds applied, an empty row gets its closest class."""
    return macro_f1(y, apply_thresholds(blend.combine(preds), blend.thresholds))


METHODS_ORDER = ("flat", "paper", "shrink", "exact")  # threshold methods from the fewest fitted values to the most


def cv_splits(y: np.ndarray, k: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Multilabel-stratified K-fold splits of the OOF rows, repeated with other seeds."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    out = []
    for r in range(repeats):
        skf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed + r)
        out += list(skf.split(np.zeros(len(y)), y))
    return out


def cv_folds_for(rows: int) -> int:
    """Below 5,000 rows 10 folds, so each fit sees 90% of the rows and methods that need many rows
    (exact thresholds, greedy weights) are not judged on much less than the final fit gets; 5 above;
    never more folds than rows."""
    if rows < 2:
        raise ConfigError(f"auto: {rows} OOF row(s) cannot be cross-validated; choose --weights and --method")
    return min(10 if rows < 5000 else 5, rows)  # a tiny OOF set: one held-out row per part


def choose_blend(oofs: list[np.ndarray], y: np.ndarray, weightings: list[str], methods: list[str], *,
                 k: int | None = None, repeats: int | None = None, settings: BlendSettings | None = None,
                 progress: bool = True) -> tuple[tuple[str, str], pd.DataFrame]:
    """Score every (weighting, threshold method) pair by K-fold cross-validation inside the OOF
    rows: fit on K-1 parts (K from `cv_folds_for`), score the held-out part. Repeated (3 times below 5,000 rows)
    because small held-out parts are noisy. The choice follows the one-standard-error rule
    (Hastie, Tibshirani & Friedman, Elements of Statistical Learning, 2nd ed., section 7.10) in its
    paired form: the simplest pair whose shortfall to the best pair, measured on the same held-out
    parts, is within one standard error of that shortfall; simplest meaning fewest fitted
    parameters (weightings and methods in the order of WEIGHTINGS and METHODS_ORDER). On few rows
    the top of the table is mostly noise and the simple pair wins; on many rows a consistently
    better pair keeps its place. Returns the choice and the table (mean and standard error of the
    K x repeats held-out scores, which overlap in training rows, so the errors are a rough guide)."""
    rounds, seed = (settings or BlendSettings()).rounds, (settings or BlendSettings()).seed
    from hpa.core.runtime import progress as progress_bar

    k = k or cv_folds_for(len(y))
    repeats = repeats or (3 if len(y) < 5000 else 1)
    scores: dict[tuple[str, str], list[float]] = {(w, m): [] for w in weightings for m in methods}
    splits = cv_splits(y, k, repeats, seed)
    for fit_rows, held in progress_bar(splits, desc="cross-validating blends", leave=False, disable=not progress):
        for w in weightings:
            fitted = fit_blend([o[fit_rows] for o in oofs], y[fit_rows], w, "flat", rounds, seed)
            blended_fit = fitted.combine([o[fit_rows] for o in oofs])
            for m in methods:
                fitted.method, fitted.thresholds = m, fit_thresholds(blended_fit, y[fit_rows], m)
                scores[(w, m)].append(score(fitted, [o[held] for o in oofs], y[held]))
    def se(v) -> float:
        return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0

    best = max(scores, key=lambda p: np.mean(scores[p]))
    table = pd.DataFrame([{"weights": w, "thresholds": m, "cv_macro_f1": np.mean(v), "std_error": se(v),
                           "shortfall": np.mean(np.subtract(scores[best], v)),
                           "shortfall_se": se(np.subtract(scores[best], v)), "n_scores": len(v)}
                          for (w, m), v in scores.items()])
    table = table.sort_values("cv_macro_f1", ascending=False, kind="stable").reset_index(drop=True)
    near = table[table["shortfall"] <= table["shortfall_se"]]
    simplest = min(near.itertuples(), key=lambda r: (WEIGHTINGS.index(r.weights), METHODS_ORDER.index(r.thresholds),
                                                      -r.cv_macro_f1))
    table["chosen"] = (table["weights"] == simplest.weights) & (table["thresholds"] == simplest.thresholds)
    return (simplest.weights, simplest.thresholds), table


def validate_submission(sub: pd.DataFrame, expected: list[str], path: Path) -> None:
    if list(sub["Id"]) != expected:
        raise PredictionError(f"{path}: submission Ids differ from sample_submission")
    for i, t in enumerate(sub["Predicted"]):
        parts = t.split()
        if not parts or [int(v) for v in parts] != sorted({int(v) for v in parts}) or any(
                not 0 <= int(v) < NUM_CLASSES for v in parts):
            raise PredictionError(f"{path}, row {i + 2}: bad Predicted {t!r}")


@dataclass
class BlendInputs:
    names: list[str]  # models, `<arch>_<size>`
    oofs: list[np.ndarray]  # per model, rows in `oof_ids` order
    tests: list[np.ndarray]  # per model, rows in `sub_ids` order
    oof_ids: list[str]
    sub_ids: list[str]
    y: np.ndarray
    test_y: np.ndarray | None
    notes: list[str]


def read_blend_inputs(oof_files: list[Path], test_files: list[Path], labels_csv: list[Path], sub_csv: Path,
                      test_labels: Path | None = None, allow_missing: bool = False,
                      folds_csv: Path | None = None) -> BlendInputs:
    """Every prediction file read and checked (provenance, coverage, Ids) before anything is fitted."""
    from hpa.data.labels import read_ids, read_labels

    notes = check_oof_provenance(oof_files, labels_csv, allow_missing, test_files, folds_csv)
    oof_groups, test_groups = group_by_model(oof_files), group_by_model(test_files)
    if set(oof_groups) != set(test_groups):
        raise PredictionError(f"models with OOF files {sorted(oof_groups)} differ from models with test files "
                              f"{sorted(test_groups)}")
    sub_ids = read_ids(sub_csv)
    names = list(oof_groups)
    per_model = {m: concat_oof(oof_groups[m]) for m in names}
    oof_ids = per_model[names[0]][0]
    if allow_missing:  # the rows every model predicted
        common = set.intersection(*(set(ids) for ids, _ in per_model.values()))
        oof_ids = [i for i in oof_ids if i in common]
        per_model = {m: restrict(ids, p, common) for m, (ids, p) in per_model.items()}
    oofs = [align(*per_model[m], oof_ids, f"{m} OOF files {oof_groups[m][0]}...") for m in names]
    tests = [align(*mean_test(test_groups[m]), sub_ids, test_groups[m][0]) for m in names]
    ty = None
    if test_labels:
        tl = read_labels(test_labels)
        ty = align(tl["Id"].tolist(), labels_matrix(tl), sub_ids, test_labels)
    return BlendInputs(names, oofs, tests, oof_ids, sub_ids, labels_for(oof_ids, labels_csv), ty, notes)


@dataclass(frozen=True)
class BlendSettings:
    """How a blend is fitted: the model weighting and threshold method (`auto`: chosen by K-fold
    cross-validation inside the OOF rows, K = `cv_folds` or cv_folds_for(rows)), greedy selection
    rounds, the seed of splits and bagging, and whether OOF rows may be missing."""
    method: str = "auto"
    weights: str = "auto"
    rounds: int = 20
    cv_folds: int | None = None
    seed: int = 0
    allow_missing: bool = False

    def checked(self) -> BlendSettings:
        """These settings, each value checked (one line naming the argument)."""
        from hpa.core.values import count
        from hpa.prediction.thresholds import METHODS

        if self.weights not in (*WEIGHTINGS, "auto"):
            raise ConfigError(f"weights={self.weights!r}: choose from {', '.join(WEIGHTINGS)} or auto")
        if self.method not in (*METHODS, "auto"):
            raise ConfigError(f"method={self.method!r}: choose from {', '.join(METHODS)} or auto")
        count("rounds", self.rounds)
        if self.cv_folds is not None:
            count("cv_folds", self.cv_folds, 2)
        return self


def run_blend(oof_files: list[Path], test_files: list[Path], labels_csv: list[Path], sub_csv: Path, out: Path, *,
              settings: BlendSettings = BlendSettings(), test_labels: Path | None = None,
              folds_csv: Path | None = None) -> dict:
    """Blend the models' OOF and test files into a submission: weights and thresholds fitted on the
    OOF rows (or chosen by cross-validation with `auto`), the submission, report.md, report.png and
    blend.json written together. Returns the summary: blend.json's content."""
    import pandas as pd

    method, weights, rounds, seed = settings.method, settings.weights, settings.rounds, settings.seed
    cv_folds, allow_missing = settings.cv_folds, settings.allow_missing

    from hpa.core.atomic import atomic_outputs, check_outputs, csv_text, reading
    from hpa.data.labels import format_target
    from hpa.prediction.report import blend_report_lines, per_class_frame, plot_per_class
    from hpa.prediction.thresholds import METHODS, per_class_table

    outputs = layout.blend_outputs(out)
    with reading({"OOF prediction": oof_files + [layout.sidecar_path(p) for p in oof_files],
                  "test prediction": test_files + [layout.sidecar_path(p) for p in test_files],
                  "labels": labels_csv, "sample submission": sub_csv, "test labels": test_labels,
                  "folds": folds_csv}):
        check_outputs(outputs)
        b = read_blend_inputs(oof_files, test_files, labels_csv, sub_csv, test_labels, allow_missing, folds_csv)
        cv_table, k = None, None
        if "auto" in (weights, method):
            k = cv_folds or cv_folds_for(len(b.y))
            if k < 2:
                raise ConfigError(f"--cv-folds {k}: auto needs at least 2")
            (weights, method), cv_table = choose_blend(
                b.oofs, b.y, list(WEIGHTINGS) if weights == "auto" else [weights],
                list(METHODS) if method == "auto" else [method], k=k, settings=settings)
        fitted = fit_blend(b.oofs, b.y, weights, method, rounds, seed)
        thr = fitted.thresholds
        oof, test = fitted.combine(b.oofs), fitted.combine(b.tests)
        pred = apply_thresholds(test, thr)
        sub = pd.DataFrame({"Id": b.sub_ids, "Predicted": [format_target(np.flatnonzero(r)) for r in pred]})
        validate_submission(sub, b.sub_ids, out)
        singles = {m: macro_f1(b.y, o >= fit_thresholds(o, b.y, method)) for m, o in zip(b.names, b.oofs)}
        summary = {"models": b.names, "weighting": weights, "weights": [float(v) for v in fitted.weights],
                   "threshold_method": method, "thresholds": [float(t) for t in thr], "oof_rows": len(b.oof_ids),
                   "oof_macro_f1_at_0.5": macro_f1(b.y, oof >= 0.5), "oof_macro_f1": macro_f1(b.y, oof >= thr),
                   "oof_macro_f1_filled": macro_f1(b.y, apply_thresholds(oof, thr)),
                   "single_model_oof_macro_f1": singles, "notes": b.notes,
                   # what hpa.prediction.ensemble.from_recipe rebuilds the ensemble from, relative to blend.json
                   "test_files": {m: [os.path.relpath(Path(p).absolute(), Path(out).absolute().parent) for p in files]
                                  for m, files in group_by_model(test_files).items()}}
        table = per_class_frame(per_class_table(oof, b.y, thr))
        if b.test_y is not None:
            summary["test_macro_f1"] = macro_f1(b.test_y, pred)
            table["test_f1"] = per_class_table(test, b.test_y, thr)["f1"]
        if cv_table is not None:
            summary["cross_validation"] = cv_table.to_dict(orient="records")
            best = cv_table[cv_table["chosen"]].iloc[0]
            summary["chosen_cv"] = [float(best["cv_macro_f1"]), float(best["std_error"])]
        lines = blend_report_lines(summary, cv_table, k, test_labels,
                                   outputs["report plot"].name, table)
        with atomic_outputs() as tmp:  # the submission and its report appear together or not at all
            tmp(outputs["submission (--out)"]).write_text(csv_text(sub))
            plot_per_class(table, tmp(outputs["report plot"]), f"blend: OOF per-class F1 and thresholds (macro "
                           f"{summary['oof_macro_f1']:.3f})")
            tmp(outputs["report"]).write_text("\n".join(lines) + "\n")
            tmp(outputs["blend summary"]).write_text(json.dumps(summary, indent=1))
        return summary
