"""What a backend must do for the shared driver, and the NumPy backend.

The driver (data, batching, schedule, logging, checkpoints, sampling) is backend-agnostic, and
so is a backend of the task: it holds the task's model (built from the model config) and does
only "loss, gradients and optimizer step for this batch and state" (``train_step``) and the
evaluation calls of its task's model (``infer(name, *args)``: the method ``name`` of the model,
which each task's NumPy and torch models have under the same names, in evaluation mode; the
:class:`numpy_rnn.tasks.base.Predictor` protocol). Everything crosses the boundary as NumPy
arrays: weights (under torch's state-dict names), recurrent states, optimizer state (in
:class:`numpy_rnn.nn.optim.Optimizer`'s ``state_dict`` format). That is what makes one
checkpoint readable by either backend and one seed mean the same start in both.

``torch_ref.backend.TorchBackend`` implements the same interface with torch.nn and torch.optim.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .._install import install_hint
from ..nn.optim import SGD, Adam, AdamW, ExponentialMovingAverage, Optimizer, clip_grad_norm
from ..tasks import get_task
from ..tasks.base import Batch, DropoutMask, State, TaskModel
from ..tasks.model import ModelConfig


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer and gradient clipping, identical in both backends."""

    name: str = "adam"               # adam | adamw | sgd
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float | None = 5.0         # max global gradient norm; None: no clipping
    ema: float = 0.0                 # decay of the weights' moving average; 0: none

    def __post_init__(self) -> None:
        if self.name not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 (or None for no clipping), got {self.clip!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (0: no moving average), got {self.ema!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OptimConfig:
        return cls(**d)


class StepResult(NamedTuple):
    loss: float        # the task's mean loss on the batch, before the update
    grad_norm: float   # global gradient norm before clipping
    state: State | None  # final recurrent states (carried by the LM's streams), or None


class GradResult(NamedTuple):
    loss: float        # the task's mean loss on the (micro-)batch
    state: State | None  # final recurrent states, or None


class Backend(ABC):
    """The interface the driver trains and samples through."""

    name: str = ""
    model: Any            # the task's model, built by the subclass

    def __init__(self, config: ModelConfig, optim: OptimConfig, device: str = "cpu") -> None:
        self.config = config
        self.optim = optim
        self.device = device

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every weight as a NumPy array in the model dtype, under torch's state-dict names."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load weights (strict: same names and shapes)."""

    @abstractmethod
    def optimizer_state_dict(self) -> dict[str, Any]:
        """Optimizer state in :meth:`numpy_rnn.optim.Optimizer.state_dict` format."""

    @abstractmethod
    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimizer state written by either backend."""

    @abstractmethod
    def set_lr(self, lr: float) -> None:
        """Change the learning rate before the next step (lr schedules)."""

    # -- the weights' moving average (OptimConfig.ema > 0), updated after every step ------------

    @abstractmethod
    def ema_state_dict(self) -> dict[str, Any] | None:
        """The moving average's state, ``{"decay", "n_averaged", "averaged": {name: array}}``
        (:meth:`numpy_rnn.nn.optim.ExponentialMovingAverage.state_dict`'s format, arrays in the
        model dtype under the state-dict names), or None without one."""

    @abstractmethod
    def load_ema_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the moving average written by either backend (a resumed run continues it
        exactly)."""

    def averaged_state_dict(self) -> dict[str, np.ndarray] | None:
        """The averaged weights (what validation, ``best.npz`` and evaluation use), or None
        without a moving average."""
        state = self.ema_state_dict()
        if state is None or not state["n_averaged"]:      # no step averaged yet
            return None
        return dict(state["averaged"])

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights (nothing changes without a
        moving average); its own are put back, bit for bit, on leaving it."""
        averaged = self.averaged_state_dict()
        if averaged is None:
            yield
            return
        own = self.state_dict()
        self.load_state_dict(averaged)
        try:
            yield
        finally:
            self.load_state_dict(own)

    def train_step(self, inputs: Any, targets: np.ndarray, state: State | None,
                   dropout_masks: Sequence[np.ndarray] | None = None) -> StepResult:
        """One optimizer step on a batch (:meth:`compute_gradients`, then clip and step),
        starting the recurrent stack from ``state`` (None: zeros) in training mode: forward,
        the task's mean loss, backward, clip to ``optim.clip``, update. ``inputs`` and
        ``targets`` are a batch's (:class:`numpy_rnn.tasks.base.Batch`): token arrays, or the
        task's NamedTuple of arrays.

        ``dropout_masks``: the keep masks the task asks for (``Task.dropout_masks``), bool,
        drawn by the driver; each backend scales them
        with :func:`numpy_rnn.nn.recurrent.scale_dropout_mask` and applies exactly those, so both
        compute the same step. Required when the config has dropout to apply; a backend
        draws no random numbers of its own."""
        loss, final = self.compute_gradients(inputs, targets, state, dropout_masks)
        return StepResult(loss, self._clip_and_step(), final)

    @abstractmethod
    def compute_gradients(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None = None) -> GradResult:
        """The first half of :meth:`train_step` on one (micro-)batch: forward and backward in
        training mode, no clipping, no update. The gradients of the task's mean loss on this
        batch replace any the backend held, for :meth:`flat_gradients`. Same arguments as
        :meth:`train_step`."""

    @abstractmethod
    def flat_gradients(self) -> np.ndarray:
        """Every parameter's gradient, one after another in a fixed order (the backend's
        parameter order), as a new float64 vector ``(n,)``: zeros before the first backward
        (and for a parameter backward left without one)."""

    @abstractmethod
    def apply_gradients(self, flat: np.ndarray) -> float:
        """The second half of :meth:`train_step`: take ``flat`` (float64 ``(n,)``, the order
        of :meth:`flat_gradients`) as the gradients, cast to the model dtype, clip them to
        ``optim.clip`` and take one optimizer step. Returns the global gradient norm before
        clipping."""

    @abstractmethod
    def _clip_and_step(self) -> float:
        """Clip the gradients the model holds to ``optim.clip`` and take one optimizer step;
        returns the global gradient norm before clipping."""

    def _method(self, name: str) -> Any:
        """The model's method ``name``, ready to evaluate; a TypeError naming the task where its
        model has none (a classifier has no ``logits``). A backend whose model has a training
        mode switches it to evaluation here."""
        method = getattr(self.model, name, None)
        if method is None:
            raise TypeError(f"a {self.config.task} model has no {name}()")
        return method

    def infer(self, name: str, *args: Any) -> Any:
        """Evaluation mode, no gradients: the model's method ``name`` on ``args`` (NumPy arrays
        and recurrent states in, NumPy out; floating results in float64). Which methods a
        model has, and where their batch rows are, its task says (``Task.inference``)."""
        return self._method(name)(*args)

    def __getattr__(self, name: str) -> Any:
        # backend.logits(...) for backend.infer("logits", ...): the inference methods of the
        # task's model (Task.inference) read as the backend's own.
        if name.startswith("_") or "config" not in self.__dict__ or \
                name not in get_task(self.config.task).inference:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return lambda *args: self.infer(name, *args)


def check_dropout_masks(config: ModelConfig, inputs: Any, targets: np.ndarray,
                        masks: Sequence[np.ndarray] | None) -> list[DropoutMask]:
    """Raise ``ValueError`` unless ``masks`` are what a training step on ``inputs`` and
    ``targets`` needs: exactly the shapes its task asks for (``Task.dropout_masks``; None when
    there are none); returns the task's declarations (each with its drop probability). The
    driver draws them; a backend never falls back on random draws of its own."""
    batch = Batch(inputs, np.asarray(targets))
    declared = get_task(config.task).dropout_masks(config, batch)
    want = [m.shape for m in declared]
    got = [] if masks is None else [np.shape(m) for m in masks]
    if got != want:
        raise ValueError(f"train_step needs the driver's dropout masks: {len(want)} of shape "
                         f"{want[0] if want else None}, got {got}")
    return declared


def make_optimizer(optim: OptimConfig, params: dict[str, np.ndarray],
                   grads: dict[str, np.ndarray]) -> Optimizer:
    """The numpy_rnn optimizer for ``optim`` over a module's ``params``/``grads``."""
    if optim.name == "sgd":
        return SGD(params, grads, lr=optim.lr, momentum=optim.momentum,
                   weight_decay=optim.weight_decay)
    cls = Adam if optim.name == "adam" else AdamW
    return cls(params, grads, lr=optim.lr, betas=optim.betas, eps=optim.eps,
               weight_decay=optim.weight_decay)


class NumpyBackend(Backend):
    """Any task's model in numpy_rnn, trained with numpy_rnn's optimizers."""

    name = "numpy"

    def __init__(self, config: ModelConfig, optim: OptimConfig, device: str = "cpu") -> None:
        if device != "cpu":
            raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}")
        super().__init__(config, optim, device)
        # Placeholder weights (seed 0): the driver loads its own.
        self.model: TaskModel = get_task(config.task).build(config, seed=0)
        self.optimizer = make_optimizer(optim, self.model.params, self.model.grads)
        self.ema = (ExponentialMovingAverage(self.model.params, optim.ema) if optim.ema > 0
                    else None)

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict(state)

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def ema_state_dict(self) -> dict[str, Any] | None:
        return None if self.ema is None else self.ema.state_dict()

    def load_ema_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is None:
            raise ValueError("this backend keeps no moving average of the weights (ema=0)")
        self.ema.load_state_dict(state)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        if self.ema is None or self.ema.n_averaged == 0:
            yield
            return
        with self.ema.swapped():          # in place: no copy of the model beyond its own
            yield

    def compute_gradients(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None = None) -> GradResult:
        check_dropout_masks(self.config, inputs, targets, dropout_masks)
        model = self.model
        model.train()
        model.zero_grad()
        loss, final = model.loss_and_backward(inputs, targets, state, dropout_masks)
        return GradResult(loss, final)

    def flat_gradients(self) -> np.ndarray:
        grads = list(self.model.grads.values())
        flat = np.empty(sum(g.size for g in grads), dtype=np.float64)
        offset = 0
        for g in grads:
            flat[offset:offset + g.size] = g.ravel()
            offset += g.size
        return flat

    def apply_gradients(self, flat: np.ndarray) -> float:
        grads = list(self.model.grads.values())
        if np.shape(flat) != (sum(g.size for g in grads),):
            raise ValueError(f"apply_gradients needs a flat vector of {sum(g.size for g in grads)}"
                             f" gradients, got shape {np.shape(flat)}")
        offset = 0
        for g in grads:
            g[...] = flat[offset:offset + g.size].reshape(g.shape)   # in place: the optimizer's
            offset += g.size
        return self._clip_and_step()

    def _clip_and_step(self) -> float:
        """Clip the gradients held in ``model.grads`` and step; the norm before clipping."""
        if self.optim.clip is not None:
            norm = clip_grad_norm(self.model.grads, self.optim.clip)
        else:
            norm = clip_grad_norm(self.model.grads, np.inf)  # norm only: coef is exactly 1
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return norm


BACKENDS = {"numpy": "numpy_rnn.driver.backend:NumpyBackend",
            "torch": "torch_ref.backend:TorchBackend"}


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` ("numpy" or "torch").

    The torch backend lives in the separate ``torch_ref`` package and is imported only when asked
    for, so numpy_rnn itself never needs torch.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ImportError(f"the {name} backend needs {exc.name}: "
                          f"{install_hint('torch')}") from exc
