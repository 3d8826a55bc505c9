"""The torch backend: every task's model and the training step of
``numpy_rnn.driver.backend.NumpyBackend``, computed by torch.nn and torch.optim.

Everything crosses the boundary as NumPy arrays, exactly as with the NumPy backend: weights under
torch's state-dict names, recurrent states ``(L, B, H)`` in the model dtype, optimizer state in
:meth:`numpy_rnn.nn.optim.Optimizer.state_dict` format keyed by parameter NAME. So a checkpoint
written by either backend loads into the other, and in float64 the two train along the same
trajectory to rounding error (tests/test_torch_backend.py).

The optimizers are torch's defaults (``foreach``/``fused`` left at None: the per-parameter loop on
CPU, the foreach kernels on CUDA; never the fused ones), with the hyperparameters of
:class:`numpy_rnn.driver.backend.OptimConfig`.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from numpy_rnn.driver.backend import (
    Backend,
    GradResult,
    OptimConfig,
    check_dropout_masks,
    make_optimizer,
)
from numpy_rnn.driver.distributed import THREAD_VARIABLES, Engine
from numpy_rnn.nn.optim import ExponentialMovingAverage
from numpy_rnn.nn.recurrent import scale_dropout_mask
from numpy_rnn.tasks import get_task
from numpy_rnn.tasks.base import State
from numpy_rnn.tasks.model import ModelConfig

from .convert import load_numpy_state, to_numpy_state
from .model import build_model

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# The numpy_rnn optimizer class name for each config name, as written in optimizer state dicts.
_OPTIM_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
_HYPERPARAMS = {"adam": ("lr", "betas", "eps", "weight_decay"),
                "adamw": ("lr", "betas", "eps", "weight_decay"),
                "sgd": ("lr", "momentum", "dampening", "nesterov", "weight_decay")}


# Torch's intra-op thread count when this module was imported (all cores, unless the user set
# OMP_NUM_THREADS or called torch.set_num_threads first), and the count choose_threads last set.
_DEFAULT_THREADS = torch.get_num_threads()
_CHOSEN_THREADS: int | None = None
#: Models with a smaller hidden size train on ONE torch thread on the CPU (choose_threads).
SMALL_HIDDEN_SIZE = 128


def choose_threads(config: ModelConfig) -> int:
    """Set torch's intra-op threads for a model on the CPU, unless the user chose them; returns
    the count in force.

    Small models (``hidden_size < SMALL_HIDDEN_SIZE``) get one thread, larger ones torch's
    default (every core). The user has chosen when a variable of ``THREAD_VARIABLES``
    (``OMP_NUM_THREADS``, ...) is set, or when the count differs from both torch's default and
    the one this function last set (``torch.set_num_threads`` called, by the user or by the
    distributed engine): then nothing changes.

    Measured (2026-12-04) on a 2-core AMD EPYC VM, torch 2.13 CPU, LSTM, float32, Adam, batch
    B x 150 characters, training steps/s with 1 | 2 threads, best of two runs of 4 s (the
    machine also ran other people's tests, load 2-4, so the 2-thread numbers swing):

    ======================  ================  ====================  =========================
    model                   other core idle   other core busy [1]   verdict
    ======================  ================  ====================  =========================
    H 32, 1 layer, B 8      209 | 203          200 | 42             1 thread (5x when busy)
    H 32, 2 layers, B 32    38  | 7            53  | 17             1 thread
    H 64, 2 layers, B 32    15  | 33 [2]       25  | 6.4            1 thread (4x when busy)
    H 128, 2 layers, B 32   6.2 | 10.5         7.0 | 3.8            2 threads idle, 1 busy
    H 256, 2 layers, B 32   2.4 | 4.0          2.4 | 1.3            2 threads idle (1.7x)
    ======================  ================  ====================  =========================

    [1] a ``python -c 'while True: pass'`` on the other core. [2] once; the other run 15 | 5.5.
    Below H 128 the matrix products of a step are too small for a second thread to pay for its
    synchronisation even on an idle machine, and on a busy one every barrier waits for a
    descheduled thread. From H 128 a second core is worth up to 1.7x when it is free, so the
    default stays; on a busy machine set ``OMP_NUM_THREADS=1``.
    """
    global _CHOSEN_THREADS
    current = torch.get_num_threads()
    if any(v in os.environ for v in THREAD_VARIABLES) or current not in (
            _DEFAULT_THREADS, _CHOSEN_THREADS):
        return current
    want = 1 if config.hidden_size < SMALL_HIDDEN_SIZE else _DEFAULT_THREADS
    if want != current:
        torch.set_num_threads(want)
    _CHOSEN_THREADS = want
    return want


def _make_torch_optimizer(optim: OptimConfig, params: list[torch.nn.Parameter]
                          ) -> torch.optim.Optimizer:
    """torch.optim's Adam / AdamW / SGD with the hyperparameters of ``optim``."""
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)
    return _OPTIMIZERS[optim.name](params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                   weight_decay=optim.weight_decay)


class TorchBackend(Backend):
    """Any task's model in torch.nn (``torch_ref.model.build_model``), trained with torch.optim;
    interface and semantics of :class:`numpy_rnn.driver.backend.NumpyBackend`.

    ``device``: "cpu", or "cuda" when torch sees a GPU; anything else is a ``ValueError``.
    """

    name = "torch"

    def __init__(self, config: ModelConfig, optim: OptimConfig, device: str = "cpu") -> None:
        if device == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("--device cuda requested but torch sees no GPU "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        elif device != "cpu":
            raise ValueError(f"the torch backend runs on 'cpu' or 'cuda', got device={device!r}")
        super().__init__(config, optim, device)
        if device == "cpu":
            choose_threads(config)
        self._np_dtype = np.dtype(config.dtype)
        # Built on the CPU inside fork_rng so that torch's own initialisation leaves the
        # caller's global generator alone; then given numpy_rnn's seed-0 weights, the NumPy
        # backend's placeholder, so the two backends start out identical.
        with torch.random.fork_rng(devices=[]):
            model = build_model(config)
        load_numpy_state(model, get_task(config.task).build(config, seed=0).state_dict())
        self.model = model.to(device)
        self.model.device = torch.device(device)
        # named_parameters order = the order the optimizer holds them = torch's integer ids.
        self._named = list(self.model.named_parameters())
        self._params = [p for _, p in self._named]
        self.optimizer = _make_torch_optimizer(optim, self._params)
        # The weights' moving average, torch's own: AveragedModel with the EMA update, called
        # after every optimizer step as its documentation shows (the NumPy backend's
        # numpy_rnn.nn.ExponentialMovingAverage computes the same).
        self.ema: AveragedModel | None = None
        if optim.ema > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(optim.ema))

    # -- weights ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return to_numpy_state(self.model)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
        for k, v in state.items():
            kind = np.asarray(v).dtype.kind
            if kind not in "fiu":
                raise TypeError(f"load_state_dict refused (nothing was changed): {k} has "
                                f"non-real dtype {np.asarray(v).dtype.name}")
        load_numpy_state(self.model, {k: np.asarray(v) for k, v in state.items()})

    # -- optimizer state -------------------------------------------------------------------------

    def optimizer_state_dict(self) -> dict[str, Any]:
        """torch's optimizer state translated to numpy_rnn's format: parameter names instead of
        integer ids, ``step`` as a Python int, every array as a NumPy copy in the model dtype."""
        group = self.optimizer.param_groups[0]
        hyper: dict[str, Any] = {}
        for k in _HYPERPARAMS[self.optim.name]:
            v = group[k]
            if k == "betas":
                hyper[k] = tuple(float(b) for b in v)
            elif k == "nesterov":
                hyper[k] = bool(v)
            else:
                hyper[k] = float(v)
        states: dict[str, dict[str, Any]] = {}
        for name, p in self._named:
            st = self.optimizer.state.get(p)
            if not st:
                continue
            entry: dict[str, Any] = {}
            for k, v in st.items():
                if k == "step":
                    entry[k] = int(v.item() if isinstance(v, torch.Tensor) else v)
                elif v is not None:
                    entry[k] = v.detach().cpu().numpy().copy()
            if self.optim.name == "sgd" and "momentum_buffer" not in entry:
                continue  # torch keeps no buffer without momentum, nor does numpy_rnn
            states[name] = entry
        return {"optimizer": _OPTIM_NAMES[self.optim.name], "hyperparams": hyper,
                "state": states}

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a numpy_rnn-format optimizer state (from either backend).

        Validated by numpy_rnn's own ``Optimizer.load_state_dict`` on a stand-in with this
        model's parameter names and shapes, so a bad state raises the same
        ``KeyError``/``ValueError``/``TypeError`` as the NumPy backend and changes nothing.
        """
        stand_in = {name: np.zeros(tuple(p.shape), dtype=self._np_dtype)
                    for name, p in self._named}
        checked = make_optimizer(self.optim, stand_in, {})
        checked.load_state_dict(state)
        index = {name: i for i, (name, _) in enumerate(self._named)}
        torch_sd = self.optimizer.state_dict()
        torch_sd["param_groups"][0].update(checked.hyperparams)
        # torch keeps a non-fused, non-capturable step count as a CPU scalar tensor of this dtype
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        torch_sd["state"] = {
            index[name]: {k: (torch.tensor(float(v), dtype=step_dtype) if k == "step"
                              else torch.from_numpy(v))
                          for k, v in st.items()}
            for name, st in checked.state.items()}
        self.optimizer.load_state_dict(torch_sd)  # copies onto each parameter's device and dtype

    def set_lr(self, lr: float) -> None:
        if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.integer,
                                                                   np.floating)):
            raise TypeError(f"lr must be a real number, got {lr!r}")
        if math.isnan(lr) or lr < 0:
            raise ValueError(f"Invalid learning rate lr={lr}: must be >= 0")
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    # -- the weights' moving average --------------------------------------------------------------

    def ema_state_dict(self) -> dict[str, Any] | None:
        if self.ema is None:
            return None
        return {"decay": float(self.optim.ema), "n_averaged": int(self.ema.n_averaged.item()),
                "averaged": to_numpy_state(self.ema.module)}

    def load_ema_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is None:
            raise ValueError("this backend keeps no moving average of the weights (ema=0)")
        # Checked as the NumPy backend checks it (same errors), on a stand-in of this model.
        stand_in = ExponentialMovingAverage(
            {name: np.zeros(tuple(p.shape), dtype=self._np_dtype) for name, p in self._named},
            self.optim.ema)
        stand_in.load_state_dict(state)
        load_numpy_state(self.ema.module, stand_in.averaged)
        self.ema.n_averaged.fill_(stand_in.n_averaged)

    # -- the computations -------------------------------------------------------------------------

    def compute_gradients(self, inputs: Any, targets: np.ndarray, state: State | None,
                          dropout_masks: Sequence[np.ndarray] | None = None) -> GradResult:
        declared = check_dropout_masks(self.config, inputs, targets, dropout_masks)
        masks = None
        if dropout_masks:
            # The driver's keep masks, each scaled with its own drop probability by the same
            # function as the NumPy models', so both multiply by exactly the same numbers.
            masks = [torch.as_tensor(scale_dropout_mask(m, d.p, self._np_dtype),
                                     device=self.device)
                     for m, d in zip(dropout_masks, declared)]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, final = self.model.train_loss(inputs, targets, state, masks)
        loss.backward()
        # The returned state is a detached NumPy copy: the next batch starts a new graph
        # (truncated BPTT), whichever backend it is fed to.
        return GradResult(float(loss.item()),
                          None if final is None else self.model.state_out(final))

    def flat_gradients(self) -> np.ndarray:
        parts = [torch.zeros(p.numel(), dtype=torch.float64) if p.grad is None
                 else p.grad.detach().reshape(-1).to("cpu", torch.float64) for p in self._params]
        return torch.cat(parts).numpy()

    def apply_gradients(self, flat: np.ndarray) -> float:
        n = sum(p.numel() for p in self._params)
        if np.shape(flat) != (n,):
            raise ValueError(f"apply_gradients needs a flat vector of {n} gradients, got shape "
                             f"{np.shape(flat)}")
        source = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float64))
        offset = 0
        for p in self._params:
            # A copy in the parameter's dtype and device, never a view of the caller's buffer.
            p.grad = source[offset:offset + p.numel()].reshape(p.shape).to(
                device=p.device, dtype=p.dtype, copy=True)
            offset += p.numel()
        return self._clip_and_step()

    def _clip_and_step(self) -> float:
        """Clip the parameters' gradients and step; the norm before clipping."""
        if self.optim.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._params, self.optim.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self._params
                                                  if p.grad is not None])
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(norm.item())

    def _method(self, name: str) -> Any:
        method = super()._method(name)
        self.model.eval()
        return method


class TorchDistributed(Engine):
    """The data-parallel engine of the torch backend: torch.distributed with the gloo backend,
    started from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``; ``env://``).

    The driver's buffers are NumPy arrays in host memory (its flat float64 gradient buffer),
    which gloo reduces in place through ``torch.from_numpy`` views, on the CPU and on CUDA
    alike (nccl would need the buffer kept on the device). With CUDA, each process trains on
    GPU ``LOCAL_RANK``. One torch thread per process unless ``OMP_NUM_THREADS`` says otherwise
    (torchrun sets it to 1 itself).
    """

    name = "torch"

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        if not dist.is_initialized():
            # Imported first, as the optimizers import it (through torch._dynamo) anyway: its
            # functions take ``group=group.WORLD`` as a default argument, and when they are
            # defined after the process group exists, they hold it, so destroy_process_group
            # cannot free it. gloo's worker threads would then live on into the interpreter's
            # shutdown, where the first one to release a finished collective's tensors (which
            # takes the GIL) dies in std::terminate and aborts a run that had succeeded.
            import torch.distributed.nn

            dist.init_process_group(backend="gloo")
            atexit.register(self._close)
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if self.size > 1 and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        """At exit: destroy the process group, which ends gloo's threads."""
        if self._dist.is_initialized():
            self._dist.destroy_process_group()

    def allreduce(self, buf: np.ndarray) -> None:
        self._dist.all_reduce(torch.from_numpy(buf), op=self._dist.ReduceOp.SUM)

    def broadcast(self, buf: np.ndarray, root: int = 0) -> None:
        self._dist.broadcast(torch.from_numpy(buf), src=root)

    def barrier(self) -> None:
        self._dist.barrier()
