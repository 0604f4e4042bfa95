"""A trained ensemble as one shareable directory in the Hugging Face model layout:

    config.json                      everything prediction needs (members, TTA, blend, thresholds, classes)
    README.md                        the model card: Hub metadata (YAML) and the evidence (OOF F1, per class)
    weights/<member>/f<fold>.safetensors   each member's fold model

Nothing in it is pickled: weights are safetensors, the rest JSON and Markdown, and every weight
file's sha256 is in config.json and checked on load. A bundle is exported from a recipe output
(`export_bundle`), loaded from a folder or a Hub repository id (`load_bundle`, through
huggingface_hub's cache, so it works offline once downloaded), and predicts a folder of images
with the whole ensemble (hpa.prediction.folder).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpa.data import layout
from hpa.errors import BundleError, CheckpointError, ConfigError, RunError
from hpa.prediction.ensemble import Ensemble, Member

FORMAT = "hpa-toolkit-bundle"
FORMAT_VERSION = 1
CONFIG, CARD = layout.BUNDLE_FILES["config"], layout.BUNDLE_FILES["card"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")



def toolkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpa-toolkit")
    except PackageNotFoundError:
        return "unknown"


def _same_training_data(provenances: list[dict], names: list[str]) -> dict:
    """The one set of labels and folds every exported run was trained on, or a refusal naming the
    first run that differs."""
    first = {"labels": provenances[0]["labels"], "folds_sha256": provenances[0]["folds_sha256"]}
    for name, p in zip(names, provenances):
        if {"labels": p["labels"], "folds_sha256": p["folds_sha256"]} != first:
            raise RunError(f"{name}: was trained on other labels or folds than {names[0]} (labels "
                           f"{sorted(p['labels'])} vs {sorted(first['labels'])}, folds sha256 "
                           f"{p['folds_sha256'][:12]}... vs {first['folds_sha256'][:12]}...); export runs of one "
                           "dataset and one folds table")
    return first


def _card(config: dict, summary: dict, report_md: str) -> str:
    """The model card: the Hub's YAML metadata, then what the ensemble is and the evidence."""
    import yaml

    meta = {"library_name": "hpa-toolkit", "license": config["license"], "pipeline_tag": "image-classification",
            "tags": ["biology", "microscopy", "fluorescence", "human-protein-atlas", "protein-localization",
                     "multi-label", "hpa-toolkit"], "datasets": config.get("datasets", [])}
    members = "\n".join(f"| {m['name']} | {m['arch']} | {m['size']} | {len(m['folds'])} | {len(m['tta'])} | "
                        f"{w:.3f} |" for m, w in zip(config["members"], config["blend"]["weights"]))
    per_class = ""
    if "| class " in report_md:  # report.md's per-class table, as the blend wrote it
        lines = report_md.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| class "))
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
        per_class = "\n".join(lines[start:end])
    data = config["training_data"]
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
            f"# HPA protein-localisation ensemble\n\n"
            f"Multi-label classifier of Human Protein Atlas confocal images (4 stains: microtubules, protein, "
            f"nucleus, ER) into the 28 localisation classes of the 2018 Kaggle competition, trained with "
            f"hpa-toolkit {config['toolkit_version']} (the method of Zhang et al., BMC Bioinformatics 22, 2021).\n\n"
            f"## Use\n\n```bash\npython predict_tta.py --bundle PATH_OR_HUB_ID --images my_images/ --out preds.csv\n"
            f"```\n\nor `hpa.load_bundle(PATH_OR_HUB_ID).predict_folder('my_images/', 'preds.csv')`. Images: "
            f"`<Id>_red|green|blue|yellow.<png|tif|jpg>` per sample.\n\n"
            f"## Members\n\n| member | arch | size | folds | TTA views | blend weight |\n|---|---|---|---|---|---|\n"
            f"{members}\n\nBlend: {config['blend']['weighting']} weights, {config['blend']['threshold_method']} "
            f"per-class thresholds (in config.json).\n\n"
            f"## Evidence\n\nOut-of-fold macro F1 of the blend: **{summary['oof_macro_f1']:.4f}** on "
            f"{summary['oof_rows']} samples (at 0.5: {summary['oof_macro_f1_at_0.5']:.4f})."
            + (f" Test macro F1: {summary['test_macro_f1']:.4f}." if "test_macro_f1" in summary else "")
            + f"\n\n{per_class}\n\n## Training data\n\n"
            + "\n".join(f"- `{name}` sha256 `{sha}`" for name, sha in data["labels"].items())
            + f"\n- folds table sha256 `{data['folds_sha256']}`\n")


def subset(ens: Ensemble, members: Sequence[str] | None, folds: Sequence[int] | None, where: Path) -> Ensemble:
    """The members and folds kept, the blend's weights renormalised over the members kept (its
    thresholds as fitted)."""
    chosen = [k for k, m in enumerate(ens.members) if members is None or m.name in members]
    unknown = sorted(set(members or []) - {m.name for m in ens.members})
    if unknown or not chosen:
        raise ConfigError(f"--members {' '.join(unknown or members or [])}: not members of the blend in {where} "
                          f"({', '.join(m.name for m in ens.members)})")
    kept = []
    for k in chosen:
        m = ens.members[k]
        keep = [i for i, f in enumerate(m.folds) if folds is None or f in folds]
        if folds is not None and set(folds) - set(m.folds):  # refused, never reduced to the folds there are
            raise ConfigError(f"--folds {' '.join(map(str, folds))}: {m.name} has folds {m.folds}")
        kept.append(Member(m.name, m.size, [m.models[i] for i in keep], m.tta, m.sizes, m.amp,
                           [m.folds[i] for i in keep], [m.configs[i] for i in keep],
                           [m.provenances[i] for i in keep]))
    w = np.asarray(ens.weights, float)[chosen]
    return Ensemble(kept, ens.weighting, w / w.sum(), ens.thresholds)


def _is_bundle(path: Path) -> bool:
    try:
        return json.loads((Path(path) / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_bundle(ens: Ensemble, out: str | Path, *, training_data: dict, summary: dict, report_md: str = "",
                 licence: str = "cc-by-sa-3.0", datasets: Sequence[str] = ()) -> Path:
    """The ensemble (members with their fold models and TrainConfigs) as a bundle directory, built
    beside `out` and moved into place whole. `summary` is the blend's (blend.json: evidence and
    threshold method), `training_data` the labels' and folds' hashes."""
    from hpa.core.atomic import staged_dir
    from hpa.data.labels import CLASS_NAMES

    out = Path(out)
    if out.exists() and not _is_bundle(out):  # a bundle is replaced whole; anything else is never deleted
        raise BundleError(f"{out}: exists and is not an hpa-toolkit bundle; choose another --out (an existing bundle "
                          "there would be replaced)")
    entries = []
    with staged_dir(out) as tmp:
        for m in ens.members:
            cfg = m.configs[0]
            files, shas = save_weights(tmp, m.name, m.folds, m.models, cfg.arch, cfg.size)
            entries.append({"name": m.name, "arch": cfg.arch, "size": m.size, "sizes": m.sizes, "tta": list(m.tta),
                            "amp": m.amp, "model": cfg.model, "channels": ["red", "green", "blue", "yellow"],
                            "input": "each stain 8-bit, scaled to [0, 1]; the model's own normalisation inside "
                                     f"(model.normalize: {cfg.model.get('normalize', 'none')})",
                            "channels_last": cfg.channels_last, "folds": list(m.folds), "files": files,
                            "sha256": shas,
                            "training": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "loss", "crop",
                                                                      "optimizer", "seed", "pretrained")}})
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "toolkit_version": toolkit_version(),
                  "license": licence, "datasets": list(datasets), "classes": list(CLASS_NAMES), "members": entries,
                  "blend": {"weighting": ens.weighting, "weights": [float(w) for w in ens.weights],
                            "threshold_method": summary.get("threshold_method", ""),
                            "models": [m.name for m in ens.members]},
                  "thresholds": [float(t) for t in ens.thresholds], "training_data": training_data,
                  "evidence": {k: summary[k] for k in ("oof_macro_f1", "oof_macro_f1_at_0.5", "oof_rows",
                                                       "test_macro_f1") if k in summary}}
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))
        (tmp / CARD).write_text(_card(config, summary, report_md))
    return out


def save_weights(root: Path, member: str, folds: Sequence[int], models: Sequence[torch.nn.Module], arch: str,
                 size: int) -> tuple[list[str], dict[str, str]]:
    """A member's fold models as safetensors under `root` (the arch, size and fold in each file's
    metadata): their paths relative to `root`, and each one's sha256."""
    from safetensors.torch import save_file

    from hpa.core.digests import file_sha256

    files, shas = [], {}
    for f, model in zip(folds, models):
        rel = layout.bundle_weights(member, f)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        state = {n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
        save_file(state, str(root / rel), metadata={"arch": arch, "size": str(size), "fold": str(f)})
        files.append(rel)
        shas[rel] = file_sha256(root / rel)
    return files, shas


def export_bundle(source: str | Path, out: str | Path, *, members: Sequence[str] | None = None,
                  folds: Sequence[int] | None = None, licence: str = "cc-by-sa-3.0", datasets: Sequence[str] = (),
                  echo=print) -> Path:
    """A recipe output (its blend.json, the runs and predictions behind it) as a bundle directory;
    `members` / `folds` keep only those. Refuses runs trained on different labels or folds."""
    from hpa.prediction.ensemble import from_recipe

    source = Path(source)
    ens = subset(from_recipe(source, torch.device("cpu")), members, folds, source)
    names = [f"{m.name} f{f}" for m in ens.members for f in m.folds]
    provs = [p for m in ens.members for p in m.provenances]
    if any(not p for p in provs):
        raise RunError(f"{names[[not p for p in provs].index(True)]}: its checkpoint records no training data; "
                       "retrain it with this version")
    report = layout.recipe_report(source)
    out = write_bundle(ens, out, training_data=_same_training_data(provs, names),
                       summary=json.loads(layout.blend_summary(source).read_text()),
                       report_md=report.read_text() if report.is_file() else "", licence=licence,
                       datasets=datasets)
    echo(f"bundle: {out} ({sum(len(m.folds) for m in ens.members)} weight files, {len(ens.members)} member(s))")
    return out


@dataclass
class Bundle:
    path: Path
    config: dict
    ensemble: Ensemble
    device: torch.device

    def with_test_time(self, *, tta: Sequence[str] | None = None, thresholds: np.ndarray | None = None) -> Bundle:
        """This bundle with the user's choices in place of its own: `tta` views for every member (a
        published model runs one view by default, as its publisher did), `thresholds` fitted on the
        user's own labelled images."""
        import dataclasses

        members = [dataclasses.replace(m, tta=tuple(tta)) for m in self.ensemble.members] if tta else \
            self.ensemble.members
        thr = self.ensemble.thresholds if thresholds is None else np.asarray(thresholds, float)
        if len(thr) != len(self.ensemble.thresholds):
            raise BundleError(f"thresholds: {len(thr)} values for the bundle's {len(self.ensemble.thresholds)} classes")
        ens = dataclasses.replace(self.ensemble, members=members, thresholds=thr)
        return dataclasses.replace(self, ensemble=ens)

    def predict_folder(self, images: str | Path, out: str | Path, *, ids_csv: str | Path | None = None,
                       strict: bool = False, report: bool | Sequence[int] = True, opts=None, echo=print):
        """hpa.prediction.folder.predict_folder with this bundle's ensemble (`opts`: a PredictOptions
        for the batch size, loader processes and device; the bundle's own TTA, sizes and precision
        apply). The bundle's folder is an input no output may go into."""
        from hpa.core.atomic import reading
        from hpa.prediction.folder import predict_folder
        from hpa.prediction.inference import PredictOptions

        opts = opts or PredictOptions()
        device = opts.torch_device()
        if device != self.device:
            self.ensemble = _ensemble(self.path, self.config, device)
            self.device = device
        with reading({"bundle": self.path}):
            return predict_folder(self.ensemble, Path(images), Path(out), ids_csv=Path(ids_csv) if ids_csv else None,
                                  strict=strict, report=report, opts=opts, echo=echo)


def resolve_bundle(path_or_id: str | Path) -> Path:
    """A local bundle directory, a published model by name (hpa.prediction.published: converted once
    into the weights cache), or a Hub repository id fetched into huggingface_hub's cache (read from
    the cache alone when offline, HF_HUB_OFFLINE=1). A folder of that name wins over a published name."""
    from hpa.prediction import published

    p = Path(path_or_id)
    if p.is_dir():
        return p
    if published.is_published(path_or_id):
        return published.published_bundle(str(path_or_id))
    if not HUB_ID.match(str(path_or_id)):
        raise BundleError(f"--bundle {path_or_id}: no such directory, not a published model "
                          f"({', '.join(sorted(published.PUBLISHED))}) and not a Hugging Face repository id "
                          "(owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id=str(path_or_id)))
    except LocalEntryNotFoundError:
        raise BundleError(f"--bundle {path_or_id}: not in the Hugging Face cache and the Hub cannot be reached "
                          "(offline); run once online, or download the repository and pass its folder") from None
    except RepositoryNotFoundError:
        raise BundleError(f"--bundle {path_or_id}: no such repository on the Hub (or it is private: "
                          "`huggingface-cli login`)") from None


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def _ensemble(root: Path, config: dict, device: torch.device) -> Ensemble:
    from safetensors.torch import load_file

    from hpa.core.digests import file_sha256
    from hpa.prediction.inference import model_for_prediction

    members = []
    for e in config["members"]:
        models = []
        for rel in e["files"]:
            path = root / rel
            if not path.is_file():
                raise BundleError(f"{path}: weight file of the bundle not found")
            if file_sha256(path) != e["sha256"][rel]:
                raise BundleError(f"{path}: sha256 differs from config.json's (altered or cut); download the bundle "
                                  "again")
            meta = _metadata(path)
            if meta.get("arch", e["arch"]) != e["arch"]:
                raise BundleError(f"{path}: holds a {meta['arch']} model, but member {e['name']} is a {e['arch']}")
            models.append(model_for_prediction(e["arch"], e["model"], load_file(str(path)), device,
                                               e["channels_last"], source=path))
        members.append(Member(e["name"], int(e["size"]), models, tuple(e["tta"]), list(e["sizes"]), e["amp"],
                              list(e["folds"]), resize=tuple(e.get("resize") or ())))
    return Ensemble(members, config["blend"]["weighting"], np.asarray(config["blend"]["weights"], float),
                    np.asarray(config["thresholds"], float), f"bundle {root}", tuple(config["classes"]))


def load_bundle(path_or_id: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """A bundle from a directory or a Hub id, every weight file checked against config.json."""
    if not isinstance(path_or_id, str | Path):
        raise BundleError(f"load_bundle({path_or_id!r}): a bundle folder or a Hugging Face repository id (owner/name)")
    from hpa.core.runtime import pick_device

    root = resolve_bundle(path_or_id)
    cfg_path = root / CONFIG
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{cfg_path}: not found; {root} is not an hpa-toolkit bundle") from None
    except ValueError as e:
        raise BundleError(f"{cfg_path}: not JSON ({e})") from None
    except OSError as e:  # a folder named config.json, no permission
        raise BundleError(f"{cfg_path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        what = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise BundleError(f"{cfg_path}: not an hpa-toolkit bundle (format {what!r})")
    # The format version is the contract between writer and reader: a newer one may hold what this
    # toolkit cannot read. The toolkit version that wrote a bundle of a known format is provenance only
    # (the model card names it): its members are rebuilt from their recorded settings and every weight
    # file must fit them (hpa.prediction.inference.model_for_prediction), whichever version wrote it.
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{cfg_path}: format_version: expected a whole number >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{cfg_path}: bundle format {version} is newer than this toolkit's ({FORMAT_VERSION}, "
                          f"hpa-toolkit {toolkit_version()}; the bundle was written by hpa-toolkit "
                          f"{config.get('toolkit_version')}); upgrade hpa-toolkit")
    check_config(config, cfg_path)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    try:
        ensemble = _ensemble(root, config, dev)
    except CheckpointError as e:  # weights that fit no network of their member's settings: name the bundle
        raise BundleError(f"bundle {root}: {e}") from None
    return Bundle(root, config, ensemble, dev)


def check_config(config: dict, where: Path) -> None:
    """A bundle's config.json as export_bundle writes it, checked whole before any weight is read (a
    hand-edited one is one line naming the key at fault): the class list, a threshold per class in
    [0, 1], a blend weight per member, and per member its arch, TTA views, precision, and a file and
    a sha256 per fold."""
    from hpa.core.runtime import AMP_MODES
    from hpa.data.class_sets import SETS
    from hpa.data.labels import CLASS_NAMES
    from hpa.models import list_archs
    from hpa.prediction.inference import DIHEDRAL

    def bad(key: str, why: str) -> BundleError:
        return BundleError(f"{where}: {key}: {why}")

    if not isinstance(config.get("toolkit_version"), str):
        raise bad("toolkit_version", f"expected the version that wrote it, got {config.get('toolkit_version')!r}")

    classes = config.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("classes", f"expected a list of class names, got {type(classes).__name__}")
    if len(classes) == len(CLASS_NAMES) and classes != list(CLASS_NAMES):
        raise bad("classes", f"expected the {len(CLASS_NAMES)} Kaggle 2018 classes in their order (first differing: "
                  f"{next(c for c, k in zip(classes, CLASS_NAMES) if c != k)!r})")
    if tuple(classes) not in SETS.values():
        raise bad("classes", f"{len(classes)} names that are none of the known class sets "
                  f"({', '.join(f'{k} ({len(v)})' for k, v in SETS.items())})")
    thr = config.get("thresholds")
    if not isinstance(thr, list) or len(thr) != len(classes) or \
            not all(isinstance(t, int | float) and 0 <= t <= 1 for t in thr):
        raise bad("thresholds", f"expected {len(classes)} numbers in [0, 1], got "
                  f"{len(thr) if isinstance(thr, list) else type(thr).__name__}")
    members, blend = config.get("members"), config.get("blend") or {}
    if not isinstance(members, list) or not members:
        raise bad("members", "expected a non-empty list")
    weights = blend.get("weights")
    if not isinstance(weights, list) or len(weights) != len(members) or \
            not all(isinstance(w, int | float) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise bad("blend.weights", f"expected one weight >= 0 per member ({len(members)}), got {weights!r}")
    for k, e in enumerate(members):
        if not isinstance(e, dict):
            raise bad(f"members[{k}]", f"expected a mapping, got {type(e).__name__}")
        name = e.get("name", f"members[{k}]")
        size = e.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise bad(f"{name}.size", f"expected a side in pixels, got {size!r}")
        if not isinstance(e.get("model"), dict):
            raise bad(f"{name}.model", f"expected the model's settings (a mapping), got {e.get('model')!r}")
        if e.get("arch") not in list_archs(published=True):
            raise bad(f"{name}.arch", f"{e.get('arch')!r} is not an arch of this toolkit")
        if not e.get("tta") or any(t not in DIHEDRAL for t in e["tta"]):
            raise bad(f"{name}.tta", f"expected names from {', '.join(DIHEDRAL)}, got {e.get('tta')!r}")
        resize = e.get("resize", [])
        if not isinstance(resize, list) or not all(isinstance(v, int) and v > 0 for v in resize) or \
                (resize and resize[-1] != e.get("size")):
            raise bad(f"{name}.resize", f"expected positive sides ending at the member's size {e.get('size')!r}, "
                      f"got {resize!r}")
        if e.get("amp") not in AMP_MODES:
            raise bad(f"{name}.amp", f"expected one of {', '.join(AMP_MODES)}, got {e.get('amp')!r}")
        files, shas = e.get("files") or [], e.get("sha256") or {}
        if len(files) != len(e.get("folds") or []) or not files:
            raise bad(f"{name}.files", f"expected one weight file per fold ({e.get('folds')!r}), got {files!r}")
        missing = [f for f in files if f not in shas]
        if missing:
            raise bad(f"{name}.sha256", f"no sha256 for {missing[0]}")


def push_bundle(path: str | Path, repo_id: str, *, private: bool = False, echo=print) -> str:
    """Upload a bundle directory to the Hub (huggingface_hub; needs `huggingface-cli login` or HF_TOKEN)."""
    from huggingface_hub import HfApi

    load_bundle(path)  # never publish a bundle that does not load
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(path), repo_id=repo_id, commit_message="hpa-toolkit bundle")
    except Exception as e:  # network, auth, offline mode: one line
        raise BundleError(f"--push {repo_id}: upload failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})") \
            from None
    echo(f"pushed {path} to https://huggingface.co/{repo_id}")
    return str(getattr(info, "commit_url", info))
