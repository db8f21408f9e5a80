"""Schema checks of a saved reranker folder, run when it is loaded (:func:`check_folder`).

A reranker folder is data a user may have downloaded, so nothing in it is trusted: each JSON file is read
with a size and depth cap and strict decoding, file names in ``config.json`` must stay inside the folder
(no ``..``, no absolute paths, no symlinks out), and every number the model computes with must be
finite, with positive standardisation scales and monotone calibration maps. Each failure is a
:class:`~mm_rerank_components.adapt.folder.RerankerFolderError` naming the folder, the file and the field,
raised before a scorer is built or a score is computed.

Example:
    >>> check_folder("my-reranker")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    RerankerFolderError: reranker folder my-reranker: fusion.json: scale[3] must be > 0, got 0.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mm_rerank_components._json import JSONLimitError, loads_strict
from mm_rerank_components.calibration import calibrator_from_dict

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "check_folder", "folder_file", "read_json"]

#: Largest JSON file of a folder (a real one is a few kilobytes) and its deepest nesting.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 32
_DEFAULT_FILES = {"fusion": "fusion.json", "calibration": "calibration.json"}


def _error(message: str) -> Exception:
    from mm_rerank_components.adapt.folder import RerankerFolderError

    return RerankerFolderError(message)


def read_json(path: Path, folder: Path, what: str) -> Any:
    """A folder's JSON file, read with the size, depth and strictness caps (NaN is read, and refused by
    the field checks, which name the field)."""
    where = f"reranker folder {folder}: {path.name}"
    try:
        if not path.is_file():
            raise _error(f"reranker folder {folder}: {path.name} is missing ({what})")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _error(f"{where} is {size} bytes, over the limit of {MAX_FILE_BYTES} for a folder file")
        return loads_strict(path.read_bytes(), max_depth=MAX_DEPTH, max_int_digits=30, allow_nan=True)
    except JSONLimitError as exc:
        detail = str(exc).removeprefix("not valid JSON ")
        raise _error(
            f"{where} is not valid JSON {detail if detail.startswith('(') else f'({detail})'}"
        ) from None
    except OSError as exc:
        raise _error(f"{where} cannot be read ({exc.strerror or exc})") from None


def folder_file(folder: Path, name: Any, field: str) -> Path:
    """``folder / name`` when ``name`` is a plain relative file name that stays inside ``folder``."""
    where = f"reranker folder {folder}: config.json: {field}"
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise _error(f"{where} must be a file name inside the folder, got {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or os.path.isabs(name):
        raise _error(f"{where} must be a file name inside the folder, got {name!r} (absolute or '..')")
    target = folder / relative
    root = folder.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise _error(f"{where} {name!r} leads outside the folder (a symlink?)")
    return target


def _finite(value: Any, where: str, field: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _error(f"{where}: {field} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise _error(f"{where}: {field} must be > 0, got {value!r}")
    return float(value)


def _strings(value: Any, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error(f"{where}: {field} must be a list of strings, got {str(value)[:80]}")
    return list(value)


def _object(value: Any, where: str, field: str, *, optional: bool = True) -> Mapping[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise _error(f"{where}: {field} must be an object, got {type(value).__name__}")
    return value


def check_config(config: Mapping[str, Any], folder: Path) -> dict[str, Path]:
    """Types of ``config.json``'s fields; returns the confined paths of the files it names."""
    where = f"reranker folder {folder}: config.json"
    files = dict(_DEFAULT_FILES)
    for key, name in _object(config.get("files"), where, "files").items():
        files[str(key)] = name
    paths = {key: folder_file(folder, name, f"files.{key}") for key, name in files.items()}
    _strings(config.get("feature_names", []), where, "feature_names")
    for field in ("trained_on", "training"):
        _object(config.get(field), where, field)
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _error(f"{where}: seed must be an integer or null, got {seed!r}")
    scorer = _object(config.get("scorer"), where, "scorer")
    for field in ("kind", "name", "spec"):
        if scorer.get(field) is not None and not isinstance(scorer.get(field), str):
            raise _error(f"{where}: scorer.{field} must be a string, got {scorer.get(field)!r}")
    for field in ("settings", "options"):
        _object(scorer.get(field), where, f"scorer.{field}")
    if scorer.get("lora"):
        folder_file(folder, scorer["lora"], "scorer.lora")
    return paths


def check_fusion(data: Any, folder: Path, file: str) -> None:  # noqa: C901 - one check per field
    """Types and finite values of the learned-fusion file (weights, standardisation, features)."""
    where = f"reranker folder {folder}: {file}"
    if not isinstance(data, Mapping):
        raise _error(f"{where} must hold a JSON object, got {type(data).__name__}")
    names = _strings(data.get("feature_names"), where, "feature_names")
    features = _object(data.get("features"), where, "features", optional=False)
    for field in ("routes", "metadata_fields"):
        _strings(features.get(field, []), where, f"features.{field}")
    if "modalities" in features:
        _strings(features["modalities"], where, "features.modalities")
    if not isinstance(features.get("bm25", False), bool):
        raise _error(f"{where}: features.bm25 must be true or false, got {features.get('bm25')!r}")
    for kind, route in _object(features.get("route_by_kind"), where, "features.route_by_kind").items():
        if not isinstance(route, str):
            raise _error(f"{where}: features.route_by_kind.{kind} must be a string, got {route!r}")
    for modality, scale in _object(features.get("listwise"), where, "features.listwise").items():
        _finite(scale, where, f"features.listwise.{modality}", positive=True)
    for field in ("mean", "scale", "weights"):
        values = data.get(field)
        if not isinstance(values, list) or len(values) != len(names):
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise _error(
                f"{where}: mean/scale/weights must each hold {len(names)} numbers (one per feature name); "
                f"{field} holds {got}"
            )
        for i, value in enumerate(values):
            _finite(value, where, f"{field}[{i}] ({names[i]})", positive=field == "scale")
    _finite(data.get("bias"), where, "bias")
    for key, value in _object(data.get("impute"), where, "impute").items():
        _finite(value, where, f"impute.{key}")
    floor = data.get("modality_floor", 0)
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise _error(f"{where}: modality_floor must be an integer >= 0, got {floor!r}")
    _object(data.get("training"), where, "training")


def check_calibration(data: Any, folder: Path, file: str) -> None:
    """The calibration file: the calibration module's own checks (finite, monotone), plus a rising map
    (a fused score that rises must not lower the probability)."""
    where = f"reranker folder {folder}: {file}"
    if not isinstance(data, Mapping):
        raise _error(f"{where} must hold a JSON object, got {type(data).__name__}")
    try:
        calibrator = calibrator_from_dict(data, source=where)
    except ValueError as exc:
        raise _error(str(exc)) from None
    for modality, mapping in getattr(calibrator, "calibrators", {}).items():
        slope = getattr(mapping, "a", None)
        if slope is not None and not slope > 0:
            raise _error(
                f"{where}: modalities.{modality}.params.a is {slope!r}; a folder's Platt map must rise "
                "with the fused score (a > 0)"
            )


def check_folder(folder: str | os.PathLike[str]) -> None:
    """Check a reranker folder's three files before anything is built from them (see module notes).

    Raises :class:`~mm_rerank_components.adapt.folder.RerankerFolderError` naming the file and field.
    """
    root = Path(folder)
    config = read_json(root / "config.json", root, "written last by mm-rerank adapt / save_reranker")
    if not isinstance(config, Mapping):
        raise _error(f"reranker folder {root}: config.json must hold a JSON object")
    if config.get("format") != "mm-rerank-reranker":
        return  # not a reranker folder at all: read_config says so
    paths = check_config(config, root)
    fusion = paths["fusion"]
    check_fusion(read_json(fusion, root, "the learned-fusion weights"), root, fusion.name)
    calibration = paths["calibration"]
    check_calibration(read_json(calibration, root, "the calibration maps"), root, calibration.name)
