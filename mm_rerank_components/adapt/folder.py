"""The saved reranker folder: ``config.json`` + ``fusion.json`` (weights) + ``calibration.json``.

Everything is plain JSON (nothing pickled, no code runs on load). The folder records what it was
trained on (a hash of the labelled data, counts per modality and route, the scorer's name and
settings, the package version, the seed and the feature names), so a reranker can be traced back to
its data. Read it with :func:`load_reranker`; ``MultimodalReranker.load(folder)``, the framework
adapters' ``from_folder`` and ``mm-rerank query --reranker FOLDER`` all end here.

Layout::

    my-reranker/
      config.json        what it is, which scorer, what it was trained on, which files hold the rest
      fusion.json        the learned-fusion model: feature settings and names, standardisation, weights
      calibration.json   Platt maps per modality (mm_rerank_components.calibration format)

Example:
    >>> save_reranker("my-reranker", model, scorer=FakeScorer())  # doctest: +SKIP
    >>> reranker = load_reranker("my-reranker")  # doctest: +SKIP
    >>> reranker.rerank("red fox", hits, top_n=5)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mm_rerank_components.adapt.folder_schema import check_folder
from mm_rerank_components.adapt.fusion import FusionModel, LearnedFusionReranker
from mm_rerank_components.calibration import PerModalityCalibrator, calibrator_from_dict
from mm_rerank_components.reranker import MultimodalReranker, OnError, ScoreCache
from mm_rerank_components.scorers.base import BaseScorer, Scorer
from mm_rerank_components.scorers.registry import scorer_from_spec

__all__ = [
    "CONFIG_FILE",
    "FOLDER_FORMAT",
    "RerankerFolderError",
    "load_reranker",
    "picture_query_reranker",
    "read_config",
    "rebuild_scorer",
    "save_reranker",
    "scorer_spec",
]

logger = logging.getLogger(__name__)

FOLDER_FORMAT = "mm-rerank-reranker"
FOLDER_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
FUSION_FILE = "fusion.json"
CALIBRATION_FILE = "calibration.json"


class RerankerFolderError(ValueError):
    """A reranker folder is missing, incomplete or malformed; the message names the folder and file."""


# --------------------------------------------------------------------------------------------------
# Scorers: what the folder records, and how it rebuilds them (through the one registry)


def scorer_spec(scorer: Scorer) -> dict[str, Any]:
    """What a folder records about ``scorer``: ``{"spec", "options", "name"}``.

    ``spec`` and ``options`` come from the scorer's declared hooks
    (:meth:`~mm_rerank_components.scorers.BaseScorer.spec`, ``spec_options``); a scorer without a spec is
    recorded with ``"spec": None`` (pass it to :func:`load_reranker` as ``scorer=``).

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> scorer_spec(FakeScorer())
        {'spec': 'fake', 'options': {}, 'name': 'fake'}
    """
    name = str(scorer.name)
    if isinstance(scorer, BaseScorer):
        try:
            return {"spec": scorer.spec(), "options": scorer.spec_options(), "name": name}
        except ValueError as exc:
            logger.info("scorer %s is recorded without a spec: %s", name, exc)
    return {"spec": None, "options": {}, "name": name}


def _spec_and_options(record: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A record's spec and options; folders of format version 1 before the registry wrote ``kind`` and
    ``settings`` (a model kind's folder in ``settings["model"]``), read the same way."""
    if "spec" in record:
        spec = record.get("spec")
        return (str(spec) if spec is not None else None), dict(record.get("options") or {})
    kind, settings = record.get("kind"), dict(record.get("settings") or {})
    if kind in ("fake", "first-stage", "starter"):
        return str(kind), settings
    if kind in ("cross-encoder", "vlm", "llm") and "model" in settings:
        return f"{kind}:{settings.pop('model')}", settings
    return None, {}


def rebuild_scorer(
    record: Mapping[str, Any], *, where: str = "<record>", folder: str | os.PathLike[str] | None = None
) -> Scorer:
    """Rebuild the scorer a folder recorded (see :func:`scorer_spec`); ``folder`` holds its LoRA adapter.

    Example:
        >>> rebuild_scorer({"spec": "fake", "options": {}, "name": "fake"}).name
        'fake'
    """
    spec, options = _spec_and_options(record)
    if spec is None:
        raise RerankerFolderError(
            f"{where}: the reranker was trained with scorer {record.get('name')!r}, which cannot be rebuilt "
            "from the folder; pass it yourself: load_reranker(folder, scorer=...)"
        )
    try:
        scorer = scorer_from_spec(spec, **options)
    except (ValueError, TypeError, OSError) as exc:
        raise RerankerFolderError(
            f"{where}: cannot rebuild the scorer {spec!r} with options {options!r} ({exc}); pass it "
            "yourself: load_reranker(folder, scorer=...)"
        ) from exc
    adapter = record.get("lora")
    if adapter:
        if folder is None:
            raise RerankerFolderError(
                f"{where}: the scorer has a LoRA adapter; give the folder that holds it"
            )
        from mm_rerank_components.adapt.lora import load_lora

        adapter_dir = Path(folder) / str(adapter)
        if not adapter_dir.is_dir():
            raise RerankerFolderError(f"{where}: the LoRA adapter folder {adapter_dir} is missing")
        scorer = load_lora(scorer, adapter_dir)
    if scorer.name != record.get("name"):
        raise RerankerFolderError(
            f"{where}: rebuilt scorer is named {scorer.name!r} but the reranker was trained with "
            f"{record.get('name')!r}; this package version builds it differently, so retrain "
            "(mm-rerank adapt)"
        )
    return scorer


# --------------------------------------------------------------------------------------------------
# Save and load


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_reranker(
    folder: str | os.PathLike[str],
    model: FusionModel,
    *,
    scorer: Scorer | None = None,
    scorer_info: Mapping[str, Any] | None = None,
    trained_on: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a learned-fusion reranker folder and return its path.

    Args:
        folder: where to write (created if missing).
        model: the fitted :class:`~mm_rerank_components.adapt.FusionModel`.
        scorer: the scorer whose raw scores the model was trained on (recorded via :func:`scorer_spec`),
            or ``scorer_info`` = an already made spec.
        trained_on: what it was trained on (data hash, files, counts per modality/route, mining
            settings); merged with the model's own training summary.
        overwrite: replace an existing reranker folder's files (other files are left alone).

    Example:
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> save_reranker("my-reranker", model, scorer=FakeScorer())  # doctest: +SKIP
        PosixPath('my-reranker')
    """
    from mm_rerank_components import __version__

    if not isinstance(model, FusionModel):
        raise TypeError(f"model must be a FusionModel (see fit_fusion), got {type(model).__name__}")
    if scorer is None and scorer_info is None:
        raise ValueError("save_reranker needs the scorer (scorer=...) the model was trained with")
    spec = dict(scorer_info) if scorer_info is not None else scorer_spec(scorer)  # type: ignore[arg-type]
    target = Path(folder)
    if (target / CONFIG_FILE).exists() and not overwrite:
        raise FileExistsError(f"{target} already holds a reranker; pass overwrite=True to replace it")
    target.mkdir(parents=True, exist_ok=True)
    fusion = model.to_dict()
    fusion.pop("calibration")  # written by the calibrator itself, in its own format
    training = fusion.get("training", {})
    config = {
        "format": FOLDER_FORMAT,
        "version": FOLDER_FORMAT_VERSION,
        "kind": "learned-fusion",
        "package_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scorer": spec,
        "files": {"fusion": FUSION_FILE, "calibration": CALIBRATION_FILE},
        "seed": training.get("seed"),
        "feature_names": list(model.feature_names),
        "trained_on": dict(trained_on or {}),
        "training": training,
    }
    _write_json(target / FUSION_FILE, fusion)
    model.calibrator.save(target / CALIBRATION_FILE)
    _write_json(target / CONFIG_FILE, config)  # last: a folder with a config is complete
    logger.info("saved learned-fusion reranker to %s", target)
    return target


def _read_json(path: Path, folder: Path, what: str) -> Any:
    if not path.is_file():
        raise RerankerFolderError(f"reranker folder {folder}: {path.name} is missing ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RerankerFolderError(
            f"reranker folder {folder}: {path.name} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise RerankerFolderError(f"reranker folder {folder}: {path.name} is not UTF-8 text") from exc


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a reranker folder's ``config.json`` (what it is and what it was trained on).

    Example:
        >>> read_config("my-reranker")["trained_on"]["queries"]  # doctest: +SKIP
        200
    """
    root = Path(folder)
    if not root.is_dir():
        raise RerankerFolderError(f"reranker folder {root} does not exist (train one with mm-rerank adapt)")
    check_folder(root)  # caps, types, finite numbers, file names inside the folder (HARDEN, issue 22)
    config = _read_json(root / CONFIG_FILE, root, "written last by mm-rerank adapt / save_reranker")
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        raise RerankerFolderError(
            f'reranker folder {root}: {CONFIG_FILE} is not a reranker config (expected "format": '
            f'"{FOLDER_FORMAT}")'
        )
    if config.get("version") != FOLDER_FORMAT_VERSION:
        raise RerankerFolderError(
            f"reranker folder {root}: {CONFIG_FILE} has version {config.get('version')!r}; this package "
            f"reads version {FOLDER_FORMAT_VERSION}"
        )
    if config.get("kind") != "learned-fusion":
        raise RerankerFolderError(f"reranker folder {root}: unknown reranker kind {config.get('kind')!r}")
    return config


def load_fusion_model(folder: str | os.PathLike[str]) -> FusionModel:
    """Only the :class:`FusionModel` of a folder (no scorer is built).

    Example:
        >>> load_fusion_model("my-reranker").feature_names[:2]  # doctest: +SKIP
        ('raw:text', 'raw:image')
    """
    root = Path(folder)
    config = read_config(root)
    files = config.get("files") or {}
    fusion_path = root / str(files.get("fusion", FUSION_FILE))
    calibration_path = root / str(files.get("calibration", CALIBRATION_FILE))
    fusion = _read_json(fusion_path, root, "the learned-fusion weights")
    calibration = _read_json(calibration_path, root, "the calibration maps")
    try:
        calibrator = calibrator_from_dict(calibration, source=str(calibration_path))
    except ValueError as exc:
        raise RerankerFolderError(f"reranker folder {root}: {calibration_path.name}: {exc}") from exc
    if not isinstance(calibrator, PerModalityCalibrator):
        raise RerankerFolderError(
            f"reranker folder {root}: {calibration_path.name} must hold a PerModalityCalibrator"
        )
    if not isinstance(fusion, dict):
        raise RerankerFolderError(f"reranker folder {root}: {fusion_path.name} must hold a JSON object")
    try:
        model = FusionModel.from_dict(
            {**fusion, "calibration": calibrator.to_dict()}, source=str(fusion_path)
        )
    except ValueError as exc:
        raise RerankerFolderError(f"reranker folder {root}: {fusion_path.name}: {exc}") from exc
    if list(model.feature_names) != list(config.get("feature_names") or []):
        raise RerankerFolderError(
            f"reranker folder {root}: feature names in {CONFIG_FILE} and {fusion_path.name} disagree; the "
            "files come from different trainings"
        )
    return model


def load_reranker(
    folder: str | os.PathLike[str],
    *,
    scorer: Scorer | None = None,
    on_error: OnError = "raise",
    batch_size: int | None = None,
    cache: bool | int | ScoreCache | None = False,
) -> LearnedFusionReranker:
    """Load a reranker folder written by ``mm-rerank adapt`` / :func:`save_reranker`.

    Args:
        folder: the folder.
        scorer: the scorer to use; by default the recorded one is rebuilt (starter, fake, first-stage,
            or a local model folder's cross-encoder / VLM / LLM scorer with its LoRA adapter).
            A scorer you pass must carry the recorded ``name`` (the model was trained on its scores).
        on_error, batch_size, cache: as for :class:`~mm_rerank_components.MultimodalReranker`.

    Returns a :class:`~mm_rerank_components.adapt.LearnedFusionReranker`, which the LlamaIndex and
    LangChain adapters accept as ``reranker=``.

    Example:
        >>> reranker = load_reranker("my-reranker")  # doctest: +SKIP
        >>> [r.id for r in reranker.rerank("red fox", hits, top_n=3)]  # doctest: +SKIP
    """
    root = Path(folder)
    config = read_config(root)
    model = load_fusion_model(root)
    spec = config.get("scorer") or {}
    where = f"reranker folder {root}: {CONFIG_FILE}"
    if scorer is None:
        scorer = rebuild_scorer(spec, where=where, folder=root)
    elif scorer.name != spec.get("name"):
        raise RerankerFolderError(
            f"{where}: the reranker was trained on scores of {spec.get('name')!r}, but the scorer passed is "
            f"{scorer.name!r}; pass that scorer (same settings) or retrain with mm-rerank adapt"
        )
    # the fusion model calibrates; the base only scores, so its own calibration is never used
    from mm_rerank_components.calibration import SigmoidCalibrator

    base = MultimodalReranker(
        scorer, SigmoidCalibrator(), batch_size=batch_size, cache=cache, on_error=on_error
    )
    return LearnedFusionReranker(base, model, picture_queries=picture_query_reranker(base, model))


def picture_query_reranker(base: MultimodalReranker, model: FusionModel) -> MultimodalReranker | None:
    """The scorer with its own calibration, for queries that hold a picture, when the fusion never saw
    one in training (labels are text queries) and the scorer ships a calibration (the starter does);
    else ``None``: the fusion reads them.

    Measured on the built-in tasks (``scripts/picture_query_routing_check.py``): fusions adapted on text
    queries ranked the query photo's own record first 12% (FreeOrion) to 100% of the time, the starter
    scorer's own maps 92-100%; ``default_reranker()`` routes its picture queries the same way.
    """
    scorer = base.scorer
    if model.training.get("picture_queries", 0) or not isinstance(scorer, BaseScorer):
        return None
    if scorer.default_calibrator() is None:
        return None
    return MultimodalReranker(scorer, batch_size=base.batch_size, cache=base.cache, on_error=base.on_error)
