"""One portable checkpoint file that either backend writes and either backend reads.

A checkpoint is an ``.npz`` archive (no pickle anywhere, so loading one never runs code):

* ``param/<name>``           every weight, under torch's state-dict names (``rnn.weight_ih_l0``);
* ``optim/<param>/<slot>``   the optimizer's arrays (Adam's ``exp_avg``, ``exp_avg_sq``);
* ``train/...``              other arrays of a training run (the hidden state carried between
                             stream batches);
* ``meta``                   UTF-8 JSON as a uint8 array: format version, the task's part (its
                             model config, vocabularies and options, written and read by the task:
                             ``Task.record``, ``Task.read_record``), step, optimizer
                             hyperparameters and step counts, and the training state (the loop's
                             settings, the driver's RNG state and batcher position). Inside the
                             JSON an array is written as ``{"__ndarray__": "<key in the
                             archive>"}``.

Everything crosses the backend boundary as NumPy arrays in numpy_rnn's formats
(:mod:`numpy_rnn.driver.backend`), which is what makes the file independent of the backend that
wrote it: train in torch, sample in NumPy, and back.

Writes are atomic: the archive goes to a temporary file in the same directory, is fsynced and
then renamed over the target, so a process killed mid-write leaves the previous checkpoint intact.
Reads validate everything (archive integrity, format version, keys, shapes against the model
config, the task's part) and raise :class:`CheckpointError` with a one-line message naming the
file. :func:`read_checkpoint` returns it all from one call: the weights, the metadata, the task
and its record.

Format versions: 1 kept one character ``vocab`` (and ``labels``) for every task and every setting
in one flat training config; 2 (written now) keeps each task's vocabularies under its own names
(seq2seq's ``source`` and ``target``) and the task's options apart from the loop's settings.
Version 1 files are still read, resumed and evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..tasks import LEGACY_TASK, find_task, get_task
from ..tasks.base import RecordError, Task, TaskRecord
from ..tasks.corpus import fsync_dir
from ..tasks.model import ModelConfig
from ..tasks.options import TaskOptions
from ..tasks.sizes import model_estimate
from .backend import Backend, OptimConfig, get_backend
from .memory import check_fits

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "backend_from_checkpoint",
    "check_weights",
    "load_checkpoint",
    "make_meta",
    "read_checkpoint",
    "read_meta",
    "record_of",
    "save_checkpoint",
    "task_of",
]

FORMAT_NAME = "numpy_rnn.checkpoint"
FORMAT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.npz"   # the latest state of a run, in its output directory
BEST_NAME = "best.npz"               # the state with the best validation metric so far (the
                                     # task's: the lowest loss, the classifier's highest micro-AP,
                                     # seq2seq's lowest WER)

_ARRAY_REF = "__ndarray__"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of an unknown format, or for another model."""


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def make_meta(task: Task, config: ModelConfig, data: Any, *, step: int, source: str,
              options: TaskOptions | None = None, backend: str | None = None,
              optimizer: Mapping[str, Any] | None = None,
              optim_config: OptimConfig | None = None,
              train: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata of a checkpoint.

    task, config, data, options: the task's part, written by the task (``Task.record``): the
    model's config, the vocabularies ``data`` has for it, and the run's ``options`` (None: none).
    step: optimizer steps taken so far. source: the corpus it was trained on (a name the task
    knows, or a file path), the default for ``evaluate``. backend: the backend that wrote it
    (informative only). optimizer: the backend's ``optimizer_state_dict()`` (arrays are moved
    to ``optim/<param>/<slot>``), or None. train: whatever else a training run needs to resume
    exactly (arrays allowed), or None.
    """
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "task": task.name,
        **task.record(config, data, options),
        "step": int(step),
        "data": str(source),
        "backend": backend,
        "optim_config": optim_config.to_json() if optim_config is not None else None,
        "optimizer": optimizer,
        "train": train,
    }


def task_of(meta: Mapping[str, Any]) -> str:
    """The task a checkpoint's model is for (:data:`LEGACY_TASK` when not recorded: saved
    before the others existed)."""
    task = meta.get("task") or LEGACY_TASK
    if not isinstance(task, str):
        raise CheckpointError(f"the recorded task must be a name, got {task!r}")
    return task


def record_of(meta: Mapping[str, Any], path: str | os.PathLike[str] = "checkpoint"
              ) -> tuple[Task, TaskRecord]:
    """A checkpoint's task and its part of the metadata, read by that task in one call
    (``Task.read_record``); ``CheckpointError`` naming ``path`` and what is wrong."""
    name = task_of(meta)
    task = find_task(name)
    if task is None:
        raise CheckpointError(f"{path} is a checkpoint of the task {name!r}, which this "
                              "numpy_rnn does not have (a task from another package? install "
                              "and register it)")
    try:
        return task, task.read_record(meta)
    except RecordError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _pack(obj: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON-ready values; every ndarray moves to ``arrays[key/...]``, leaving a ref."""
    if isinstance(obj, np.ndarray):
        if key in arrays:
            raise ValueError(f"checkpoint key {key!r} used twice")
        arrays[key] = np.ascontiguousarray(obj)
        return {_ARRAY_REF: key}
    if isinstance(obj, Mapping):
        return {str(k): _pack(v, f"{key}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, f"{key}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpack(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_REF}:
            ref = obj[_ARRAY_REF]
            if ref not in arrays:
                raise KeyError(f"array {ref!r} is missing")
            return arrays[ref]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike[str], weights: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``weights`` (name -> array) and ``meta`` (see :func:`make_meta`) to ``path``.

    Atomic: the file at ``path`` is either the previous one or the complete new one, never a
    partial write, even if the process is killed. Returns the path.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        arrays[f"param/{name}"] = np.ascontiguousarray(w)
    packed = {}
    for k, v in meta.items():
        if k in ("param", "meta"):
            raise ValueError(f"metadata key {k!r} is reserved")
        if k == "optimizer" and isinstance(v, Mapping):
            # The optimizer's per-parameter arrays under the documented optim/<param>/<slot>.
            v = dict(v)
            v["state"] = _pack(v.get("state", {}), "optim", arrays)
            packed[k] = _pack(v, k, arrays)
        else:
            packed[k] = _pack(v, k, arrays)
    # allow_nan=False: strict JSON, readable anywhere (a NaN in the metadata is a bug).
    text = json.dumps(packed, allow_nan=False, ensure_ascii=False)
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    atomic_write(path, "wb", lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    # (numpy's stub types savez's keyword arrays as its allow_pickle flag)
    return path


def atomic_write(path: Path, mode: str, write: Any) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync it, then rename it over ``path``:
    a killed process leaves either the old file or the new one, never half of one.

    An ``OSError`` says ``path`` and what is wrong with it, never the temporary file's name.
    """
    try:
        fd, tmp_name = open_temporary(path)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    fsync_dir(path.parent)


def _write_error(path: Path, exc: OSError) -> OSError:
    """An ``OSError`` (same errno) that names ``path``, the file the user asked for."""
    what = ("it is a directory" if path.is_dir() else
            f"{path.parent} is not a directory" if path.parent.exists()
            and not path.parent.is_dir() else exc.strerror or str(exc))
    err = OSError(f"cannot write {path}: {what}")
    err.errno = exc.errno
    return err


def open_temporary(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` for an atomic replace: ``(fd, name)``.

    Unlike ``tempfile.mkstemp`` (mode 0600), it gets the permissions of any new file (0666 less
    the umask), which the rename then gives to ``path``.
    """
    while True:
        name = str(path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _read_arrays(path: Path, only: str | None = None) -> dict[str, np.ndarray]:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path} is not a numpy_rnn checkpoint (an .npy array, "
                                  "not an .npz archive)")
        with npz:
            if only is not None:
                return {only: npz[only]} if only in npz.files else {}
            # Reading every member now checks every CRC: a corrupted file fails here, whole.
            return {k: npz[k] for k in npz.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        why = _one_line(exc)
        if "allow_pickle" in why:       # an array of Python objects: never a checkpoint's
            why = "it holds pickled Python objects, which a checkpoint never does"
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): "
                              f"{why}") from exc


def _decode_meta(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    raw = arrays.get("meta")
    if raw is None:
        raise CheckpointError(f"{path} is not a numpy_rnn checkpoint (no 'meta' entry)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: 'meta' must be a 1-D uint8 array, got {raw.dtype} "
                              f"{raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path}: corrupted metadata ({_one_line(exc)})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a numpy_rnn checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, this numpy_rnn reads up to "
                              f"{FORMAT_VERSION}: upgrade numpy_rnn")
    if version < 1:
        raise CheckpointError(f"{path}: unknown format version {version}")
    return meta


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint without its arrays (quick: only ``meta`` is read).

    Array references inside stay unresolved; use :func:`load_checkpoint` for a validated load.
    """
    path = Path(path)
    return _decode_meta(path, _read_arrays(path, only="meta"))


def check_weights(weights: Mapping[str, np.ndarray], config: ModelConfig,
                  where: str = "weights") -> None:
    """Raise ``CheckpointError`` unless ``weights`` has exactly the names and shapes of the
    model of ``config`` (its task's), real floating dtypes and only finite values."""
    expected = {k: v.shape for k, v in get_task(config.task).build(config, 0).params.items()}
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        raise CheckpointError(f"{where} do not fit the model config: missing keys {missing}, "
                              f"unexpected keys {extra}")
    for k, shape in expected.items():
        w = np.asarray(weights[k])
        if w.shape != shape:
            raise CheckpointError(f"{where}: {k} has shape {w.shape}, the model config needs "
                                  f"{shape}")
        if w.dtype.kind != "f":
            raise CheckpointError(f"{where}: {k} has dtype {w.dtype}, expected floating point")
        if not np.isfinite(w).all():
            raise CheckpointError(f"{where}: {k} holds NaN or infinite values")


class Checkpoint(NamedTuple):
    """A checkpoint read whole (:func:`read_checkpoint`): its ``weights`` by state-dict name, its
    ``meta`` (every array reference resolved), its ``task`` and the task's ``record`` of it
    (model config, vocabularies, options)."""

    weights: dict[str, np.ndarray]
    meta: dict[str, Any]
    task: Task
    record: TaskRecord

    @property
    def config(self) -> ModelConfig:
        return self.record.config


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate a checkpoint in one call: its weights, metadata, task and record.

    Raises :class:`CheckpointError` (a ``ValueError``) for a missing, truncated, corrupted or
    unknown file, a newer format, a damaged task part, or weights that do not fit the recorded
    config. A model too big to build is refused before its weights are checked (the memory
    guard, with the task's own count of its parameters).
    """
    path = Path(path)
    arrays = _read_arrays(path)
    meta = _decode_meta(path, arrays)
    try:
        meta = _unpack(meta, arrays)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {_one_line(exc.args[0])}") from exc
    task, record = record_of(meta, path)
    config = record.config
    if not isinstance(meta.get("data"), str):
        raise CheckpointError(f"{path}: data must be the corpus name or path, got "
                              f"{_one_line(repr(meta.get('data')))[:80]}")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}: step must be an integer >= 0, got {step!r}")
    why = (_bad_optim_config(meta.get("optim_config"))
           or _bad_train_state(meta.get("train"), 2 if config.cell == "lstm" else 1))
    if why:
        raise CheckpointError(f"{path}: {why}")
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    # check_weights builds a model of the recorded config: refuse one too big to build first.
    check_fits(model_estimate(config, task.parameter_count(config), f"{path}: its model needs"))
    check_weights(weights, config, where=str(path))
    ema = (meta.get("train") or {}).get("ema")
    if ema is not None:
        if not (isinstance(ema.get("n_averaged"), int) and isinstance(ema.get("averaged"), dict)):
            raise CheckpointError(f"{path}: the moving average of the weights needs n_averaged "
                                  "and the averaged weights")
        check_weights(ema["averaged"], config, where=f"{path} (its moving average)")
    return Checkpoint(weights, meta, task, record)


def load_checkpoint(path: str | os.PathLike[str]
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and validate a checkpoint: ``(weights, meta)`` (:func:`read_checkpoint` has its
    task and record as well).

    ``weights`` maps state-dict names to arrays; ``meta`` is the metadata with every array
    reference resolved (the optimizer state is back in ``Optimizer.state_dict`` format).
    """
    checkpoint = read_checkpoint(path)
    return checkpoint.weights, checkpoint.meta


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _bad_optim_config(d: Any) -> str | None:
    """Why the recorded ``optim_config`` (a dict of :class:`OptimConfig`'s fields, or null) is
    unusable, or None when it is fine."""
    if d is None:
        return None
    try:
        if not isinstance(d, dict):
            raise TypeError(f"expected a mapping, got {type(d).__name__}")
        for k in ("lr", "eps", "weight_decay", "momentum"):
            if k in d and not _is_number(d[k]):
                raise TypeError(f"{k} must be a number, got {d[k]!r}")
        if "clip" in d and d["clip"] is not None and not _is_number(d["clip"]):
            raise TypeError(f"clip must be a number or null, got {d['clip']!r}")
        if "betas" in d and not (isinstance(d["betas"], list) and len(d["betas"]) == 2
                                 and all(_is_number(b) for b in d["betas"])):
            raise TypeError(f"betas must be two numbers, got {d['betas']!r}")
        OptimConfig.from_json(d)
    except (TypeError, ValueError) as exc:
        return f"bad optim_config: {_one_line(exc)[:200]}"
    return None


#: Entries of a run's training state (``meta["train"]``) and the JSON types each may have.
_TRAIN_TYPES: dict[str, tuple[type, ...]] = {
    "config": (dict,), "backend": (str,), "batches": (dict,), "dropout_rng": (dict,),
    "data_rng": (dict,), "batcher": (dict,), "carried": (list,),
    "best_val_loss": (int, float), "best_step": (int,), "processes": (int,),
    "micro_batches": (int,), "ema": (dict,), "elapsed_s": (int, float),
}


def _bad_train_state(state: Any, num_states: int) -> str | None:
    """Why the recorded training state (``meta["train"]``, null for a checkpoint that cannot
    be resumed) is of the wrong shape, or None when its known entries have their types."""
    if state is None:
        return None
    if not isinstance(state, dict):
        return f"the training state must be a mapping or null, got {type(state).__name__}"
    for k, types in _TRAIN_TYPES.items():
        v = state.get(k)
        if k in state and v is None and k in ("processes", "micro_batches"):
            return f"the training state's {k} must be an integer, got null"
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            return f"the training state's {k} is of the wrong type ({_one_line(repr(v))[:80]})"
    carried = state.get("carried")
    if carried is not None and not (len(carried) == num_states
                                    and all(isinstance(c, np.ndarray) for c in carried)):
        return f"the training state's carried hidden state is not {num_states} array(s)"
    config = state.get("config") or {}
    for k in ("data", "backend", "task", "out"):
        v = config.get(k)
        if k in config and not isinstance(v, str):
            return f"the saved training config's {k} must be a string, got {v!r}"
    return None


def backend_from_checkpoint(weights: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                            backend: str = "numpy", device: str = "cpu") -> Backend:
    """A backend (by name) holding the checkpoint's model, ready for its inference methods
    (``Task.inference``: sampling, evaluation, decoding): its weights, or the moving average of
    them when its run kept one (``train --ema``; the weights it validated and chose ``best.npz``
    with). The optimizer state is not loaded."""
    _, record = record_of(meta)
    config = record.config
    train = meta.get("train")
    ema = train.get("ema") if isinstance(train, Mapping) else None
    if isinstance(ema, Mapping) and ema.get("n_averaged"):
        weights = ema["averaged"]
    try:
        optim = (OptimConfig.from_json(meta["optim_config"]) if meta.get("optim_config")
                 else OptimConfig())
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"bad optim_config in the checkpoint: {_one_line(exc)}") from exc
    # Inference keeps no moving average of its own.
    model = get_backend(backend)(config, dataclasses.replace(optim, ema=0.0), device)
    model.load_state_dict(dict(weights))
    return model
