"""The workload registry: what one timed call does, for NumPy, torch (CPU and GPU) and the floor.

A workload turns a :class:`~benchmarks.configs.Config` into a :class:`Bench`: zero-argument
callables that do the same work in each backend, on the same weights and inputs, plus a check
that the two backends really computed the same numbers. Everything a workload needs lives in its
``setup`` function, so adding one is one function and one ``register(...)`` call here; the CLI,
the harness, the report and the chart pick it up from ``WORKLOADS``.

Measured now:

* ``forward``: ``out, state = layer(x)``. NumPy keeps its backward cache (that is what its layer
  does); torch runs under ``torch.inference_mode()`` and keeps nothing.
* ``forward-backward``: ``layer(x)`` then ``layer.backward(dout, dstates)`` with random upstream
  gradients for the output and the final states; torch runs autograd with ``x.requires_grad``
  and the same upstream gradients. Both accumulate parameter gradients call after call, as
  ``backward`` and ``.grad`` do.

* ``train-step``: one ``train_step`` of the shared driver's NumPy and torch backends on the same
  batch and weights.
* ``sample-latency`` / ``sample-throughput``: ``T`` characters generated one model call at a time,
  for 1 and for 64 streams.
* ``seq2seq-train-step``: one ``train_step`` of the driver's NumPy and torch backends on the
  seq2seq model (encoder, bridge, attention decoder, cross-entropy, clipping, Adam), on the
  ``seq2seq`` configurations only (``Workload.task``).

A workload that cannot run yet is registered with ``pending=...`` (why) instead of ``setup``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import floor
from .configs import Config


def _noop() -> None:
    return None


@dataclass
class Bench:
    """The prepared callables of one (config, workload).

    ``numpy``, ``torch``, ``torch_gpu`` and ``floor`` each do one call's work; ``torch_gpu`` is None
    without a GPU, ``floor`` None for workloads without a floor. ``sync`` functions wait for
    asynchronous work (the GPU) to finish. ``check()`` runs both backends once and returns the
    largest absolute differences between their results, by name. ``items_per_call`` counts the
    unit of throughput a call produces (1 call, or ``T`` characters for sampling).
    """

    numpy: Callable[[], Any]
    torch: Callable[[], Any]
    check: Callable[[], dict[str, float]]
    floor: floor.GemmSequence | None = None
    torch_gpu: Callable[[], Any] | None = None
    torch_gpu_sync: Callable[[], None] = _noop
    items_per_call: int = 1
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    """A named kind of work. ``setup(cfg, gpu)`` builds the :class:`Bench` (``gpu``: put a copy of
    the torch side on CUDA); a workload that cannot run yet has ``setup=None`` and says why in
    ``pending``. It runs on the configurations of its ``task`` (``Config.task``) only."""

    name: str
    description: str
    unit: str = "call"                      # what items_per_call counts: "call" or "char"
    setup: Callable[[Config, bool], Bench] | None = None
    pending: str | None = None
    task: str = "charrnn"                   # the configurations it runs on: Config.task

    @property
    def available(self) -> bool:
        return self.setup is not None

    def applies_to(self, cfg: Config) -> bool:
        """Whether this workload measures something on ``cfg`` (a model of its task)."""
        return cfg.task == self.task


WORKLOADS: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    if workload.name in WORKLOADS:
        raise ValueError(f"workload {workload.name!r} registered twice")
    if (workload.setup is None) == (workload.pending is None):
        raise ValueError(f"workload {workload.name!r}: give exactly one of setup and pending")
    WORKLOADS[workload.name] = workload
    return workload


# --------------------------------------------------------------------------------------------
# The recurrent layer: the same stack in numpy_rnn and torch.nn, weights copied from torch.
# --------------------------------------------------------------------------------------------

@dataclass
class RecurrentPair:
    """numpy_rnn's layer and torch's module with equal weights, and the inputs of one call."""

    cfg: Config
    layer: Any                 # numpy_rnn.LSTM / GRU / RNN
    module: Any                # torch.nn.LSTM / GRU / RNN, CPU
    x: np.ndarray              # (T, B, F)
    dout: np.ndarray           # (T, B, H) upstream gradient of out
    dstates: tuple[np.ndarray, ...]   # (L, B, H) each: of h_n (and c_n for the LSTM)

    @property
    def is_lstm(self) -> bool:
        return self.cfg.cell == "lstm"

    def numpy_forward(self):
        return self.layer(self.x)

    def numpy_forward_backward(self):
        self.layer(self.x)
        ds = self.dstates if self.is_lstm else self.dstates[0]
        return self.layer.backward(self.dout, ds)


def make_recurrent_pair(cfg: Config, seed: int = 0) -> RecurrentPair:
    """Build both layers with torch's initialisation, copied into numpy_rnn, and random inputs."""
    import torch

    import numpy_rnn
    from torch_ref import to_numpy_state

    np_cls = {"lstm": numpy_rnn.LSTM, "gru": numpy_rnn.GRU, "rnn": numpy_rnn.RNN}[cfg.cell]
    th_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cfg.cell]
    dt = np.dtype(cfg.dtype)
    torch.manual_seed(seed)
    module = th_cls(cfg.input_size, cfg.hidden_size, cfg.num_layers,
                    dtype=getattr(torch, cfg.dtype))
    layer = np_cls(cfg.input_size, cfg.hidden_size, cfg.num_layers, dtype=dt.type, seed=seed)
    layer.load_state_dict(to_numpy_state(module))
    rng = np.random.default_rng(seed)
    T, B, L, H = cfg.seq_len, cfg.batch, cfg.num_layers, cfg.hidden_size
    x = rng.standard_normal((T, B, cfg.input_size)).astype(dt)
    dout = rng.standard_normal((T, B, H)).astype(dt)
    n_states = 2 if cfg.cell == "lstm" else 1
    dstates = tuple(rng.standard_normal((L, B, H)).astype(dt) for _ in range(n_states))
    return RecurrentPair(cfg, layer, module, x, dout, dstates)


def _torch_forward(module, x):
    """``module(x)`` without autograd, returning the output tensor."""
    import torch

    def call():
        with torch.inference_mode():
            return module(x)[0]
    return call


def _torch_forward_backward(module, x, dout, dstates, is_lstm):
    """Autograd forward + backward with the given upstream gradients; returns ``x.grad``."""
    import torch

    xg = x.detach().clone().requires_grad_(True)

    def call():
        out, st = module(xg)
        finals = st if is_lstm else (st,)
        torch.autograd.backward((out, *finals), (dout, *dstates))
        dx, xg.grad = xg.grad, None    # a fresh dx each call, as NumPy returns one
        return dx
    return call


def _max_abs(a: np.ndarray, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b.detach().cpu().double().numpy())))


def _gpu_copy(pair: RecurrentPair):
    """The module and the call's tensors on the GPU, or None without one."""
    import copy

    import torch
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    module = copy.deepcopy(pair.module).to(dev)
    x = torch.from_numpy(pair.x).to(dev)
    dout = torch.from_numpy(pair.dout).to(dev)
    dstates = tuple(torch.from_numpy(d).to(dev) for d in pair.dstates)
    return module, x, dout, dstates, torch.cuda.synchronize


def setup_forward(cfg: Config, gpu: bool) -> Bench:
    import torch
    pair = make_recurrent_pair(cfg)
    x = torch.from_numpy(pair.x)
    torch_call = _torch_forward(pair.module, x)

    def check():
        return {"out": _max_abs(pair.numpy_forward()[0], torch_call())}

    bench = Bench(numpy=pair.numpy_forward, torch=torch_call, check=check,
                  floor=floor.recurrent_forward_floor(cfg))
    g = _gpu_copy(pair) if gpu else None
    if g is not None:
        module, xg, _, _, sync = g
        bench.torch_gpu, bench.torch_gpu_sync = _torch_forward(module, xg), sync
    return bench


def setup_forward_backward(cfg: Config, gpu: bool) -> Bench:
    import torch
    pair = make_recurrent_pair(cfg)
    torch_call = _torch_forward_backward(
        pair.module, torch.from_numpy(pair.x), torch.from_numpy(pair.dout),
        tuple(torch.from_numpy(d) for d in pair.dstates), pair.is_lstm)

    def check():
        dx_np = pair.numpy_forward_backward()[0]
        return {"dx": _max_abs(dx_np, torch_call())}

    bench = Bench(numpy=pair.numpy_forward_backward, torch=torch_call, check=check,
                  floor=floor.recurrent_forward_backward_floor(cfg))
    g = _gpu_copy(pair) if gpu else None
    if g is not None:
        module, xg, dout, dstates, sync = g
        bench.torch_gpu = _torch_forward_backward(module, xg, dout, dstates, pair.is_lstm)
        bench.torch_gpu_sync = sync
    return bench


def _train_step_bench(fresh: Callable[..., Any], inputs: Any, targets: Any,
                      check: Callable[[], dict[str, float]], gpu: bool) -> Bench:
    """One ``train_step`` of the NumPy and torch backends that ``fresh(cls, device)`` builds
    (same weights), on the same batch; the torch GPU column too where CUDA is available."""
    from numpy_rnn.driver.backend import NumpyBackend
    from torch_ref.backend import TorchBackend

    nb, tb = fresh(NumpyBackend), fresh(TorchBackend)
    bench = Bench(numpy=lambda: nb.train_step(inputs, targets, None),
                  torch=lambda: tb.train_step(inputs, targets, None), check=check)
    if gpu:
        import torch
        if torch.cuda.is_available():
            gb = fresh(TorchBackend, "cuda")
            bench.torch_gpu = lambda: gb.train_step(inputs, targets, None)
            bench.torch_gpu_sync = torch.cuda.synchronize
    return bench


register(Workload(
    name="forward",
    description="recurrent stack forward, out, state = layer(x); torch under inference_mode",
    setup=setup_forward))
register(Workload(
    name="forward-backward",
    description="recurrent stack forward then backward with random upstream gradients "
                "(out, h_n, c_n); torch autograd",
    setup=setup_forward_backward))

# --------------------------------------------------------------------------------------------
# CharRNN workloads: Embedding -> recurrent stack -> Linear, from the same seeded weights.
# --------------------------------------------------------------------------------------------

def _charrnn_config(cfg: Config):
    from numpy_rnn.tasks.model import ModelConfig
    # The stack's input size is the embedding width (the seed: vocabulary 30, embedding 30).
    return ModelConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden_size,
                       num_layers=cfg.num_layers, cell=cfg.cell, embedding_dim=cfg.input_size,
                       dtype=cfg.dtype)


def setup_train_step(cfg: Config, gpu: bool) -> Bench:
    """Both backends of the shared driver, loaded with the same weights, one ``train_step`` on the
    same (B, T) batch per call (embedding, stack, decoder, cross-entropy, clipping, Adam)."""
    from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
    from numpy_rnn.tasks.lm import CharRNN
    from torch_ref.backend import TorchBackend

    mcfg = _charrnn_config(cfg)
    weights = CharRNN(mcfg, seed=0).state_dict()
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, cfg.vocab, (cfg.batch, cfg.seq_len))
    targets = rng.integers(0, cfg.vocab, (cfg.batch, cfg.seq_len))

    def fresh(cls, device="cpu"):
        b = cls(mcfg, OptimConfig(), device)
        b.load_state_dict(weights)
        return b

    def check():
        a, b = fresh(NumpyBackend), fresh(TorchBackend)
        return {"loss": abs(a.train_step(inputs, targets, None).loss
                            - b.train_step(inputs, targets, None).loss)}

    return _train_step_bench(fresh, inputs, targets, check, gpu)


def _sampling_bench(cfg: Config, gpu: bool, streams: int) -> Bench:
    """``T`` characters for ``streams`` streams, one character per model call, greedy (the draw is
    the driver's and the same for both backends, so it is left out). NumPy: numpy_rnn's CharRNN;
    torch: torch_ref's CharRNN module (``nn.LSTM`` stepping one character per call) with tensors
    kept on the torch side and no conversions."""
    import torch

    from numpy_rnn.tasks.lm import CharRNN
    from torch_ref.convert import load_numpy_state
    from torch_ref.model import CharRNN as TorchCharRNN

    mcfg = _charrnn_config(cfg)
    np_model = CharRNN(mcfg, seed=0).eval()
    th_model = TorchCharRNN(mcfg).eval()
    load_numpy_state(th_model, np_model.state_dict())
    start = np.zeros((streams, 1), np.int64)

    def numpy_call():
        tok, state = start, None
        for _ in range(cfg.seq_len):
            logits, state = np_model(tok, state)
            tok = logits[:, -1].argmax(axis=-1)[:, None]
        return tok

    def torch_call_on(model, device):
        first = torch.from_numpy(start).to(device)

        def call():
            with torch.inference_mode():
                tok, state = first, None
                for _ in range(cfg.seq_len):
                    logits, state = model(tok, state)
                    tok = logits[:, -1].argmax(dim=-1, keepdim=True)
            return tok
        return call

    torch_call = torch_call_on(th_model, "cpu")

    def check():
        # The logits of the first character (greedy tokens could part on a float32 near-tie).
        with torch.inference_mode():
            want = th_model(torch.from_numpy(start))[0].double().numpy()
        return {"logits": float(np.max(np.abs(np_model(start)[0] - want)))}

    bench = Bench(numpy=numpy_call, torch=torch_call, check=check,
                  items_per_call=cfg.seq_len * streams,
                  floor=floor.sampling_floor(cfg, streams))
    if gpu and torch.cuda.is_available():
        import copy
        bench.torch_gpu = torch_call_on(copy.deepcopy(th_model).to("cuda"), "cuda")
        bench.torch_gpu_sync = torch.cuda.synchronize
    return bench


register(Workload(
    name="train-step",
    description="one CharRNN training step: embedding, recurrent stack, decoder, "
                "cross-entropy, gradient clipping, Adam update",
    setup=setup_train_step))
register(Workload(
    name="sample-latency",
    description="sampling one stream: latency per character (T characters per call)",
    unit="char", setup=lambda cfg, gpu: _sampling_bench(cfg, gpu, 1)))
register(Workload(
    name="sample-throughput",
    description="sampling 64 streams at once: characters per second (64*T characters per call)",
    unit="char", setup=lambda cfg, gpu: _sampling_bench(cfg, gpu, 64)))


# --------------------------------------------------------------------------------------------
# The seq2seq task: encoder-decoder with attention, one training step of the driver's backends.
# --------------------------------------------------------------------------------------------

def _seq2seq_config(cfg: Config):
    """The task's model config of a ``seq2seq`` configuration (general attention)."""
    from numpy_rnn.tasks.seq2seq import Seq2SeqConfig
    return Seq2SeqConfig(vocab_size=cfg.vocab, target_vocab_size=cfg.target_vocab,
                         hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, cell=cfg.cell,
                         embedding_dim=cfg.input_size, target_embedding_dim=cfg.input_size,
                         dtype=cfg.dtype, attention="general",
                         input_feeding=cfg.input_feeding)


def seq2seq_batch(cfg: Config, seed: int = 0):
    """A random padded batch shaped like a CMUdict one: ``B = cfg.batch`` sources of at most
    ``S = cfg.seq_len`` letters and targets of at most ``T = cfg.seq_len`` tokens (EOS
    included). Row 0 is full length (so the batch pads to exactly S and T); the others' lengths
    are drawn uniformly from ``[max(1, S - 12), S]`` (and likewise for T): for S = 14 a mean of
    8, near CMUdict's 7.5 letters and 7.4 phonemes plus EOS. Returns ``(Seq2SeqInputs,
    targets (B, T))``: ids ``source (B, S)`` in ``[1, vocab)`` padded with PAD, ``target_in
    (B, T)`` = BOS y_1 .. y_n padded with PAD, ``targets`` = y_1 .. y_n EOS padded with
    IGNORE_INDEX."""
    from numpy_rnn.nn.losses import IGNORE_INDEX
    from numpy_rnn.tasks.seq2seq import BOS, EOS, PAD, Seq2SeqInputs

    rng = np.random.default_rng(seed)
    B, n = cfg.batch, cfg.seq_len
    lengths = rng.integers(max(1, n - 12), n + 1, (2, B))
    lengths[:, 0] = n
    src_len, tgt_len = lengths                              # (B,) each; targets with EOS
    source = np.full((B, n), PAD, np.int64)
    target_in = np.full((B, n), PAD, np.int64)
    targets = np.full((B, n), IGNORE_INDEX, np.int64)
    for b in range(B):
        source[b, :src_len[b]] = rng.integers(1, cfg.vocab, src_len[b])
        body = rng.integers(EOS + 1, cfg.target_vocab, tgt_len[b] - 1)   # y_1 .. y_n
        target_in[b, :tgt_len[b]] = [BOS, *body]
        targets[b, :tgt_len[b]] = [*body, EOS]
    return Seq2SeqInputs(source, src_len.astype(np.int64), target_in), targets


def setup_seq2seq_train_step(cfg: Config, gpu: bool) -> Bench:
    """As ``train-step``, for the seq2seq model: both backends of the shared driver with the
    same weights (NumPy's seed-0 model), one ``train_step`` on the same batch per call: encoder
    (bidirectional, with the source lengths), bridge, decoder with general attention (and input
    feeding, where the config has it), output layer, cross-entropy over the valid targets,
    backward, gradient clipping, Adam. torch's side is ``torch_ref.seq2seq.Seq2Seq`` under
    autograd; on the GPU the same backend with ``device="cuda"`` (its model moves the batch to
    the GPU each call, and ``loss.item()`` waits for it)."""
    from numpy_rnn.driver.backend import NumpyBackend, OptimConfig
    from numpy_rnn.tasks.seq2seq import Seq2Seq
    from torch_ref.backend import TorchBackend

    mcfg = _seq2seq_config(cfg)
    weights = Seq2Seq(mcfg, seed=0).state_dict()
    inputs, targets = seq2seq_batch(cfg)

    def fresh(cls, device="cpu"):
        b = cls(mcfg, OptimConfig(), device)
        b.load_state_dict(weights)
        return b

    def check():
        a = fresh(NumpyBackend).train_step(inputs, targets, None)
        b = fresh(TorchBackend).train_step(inputs, targets, None)
        # The loss, and the gradient norm before clipping (the whole backward in one number).
        return {"loss": abs(a.loss - b.loss), "grad_norm": abs(a.grad_norm - b.grad_norm)}

    return _train_step_bench(fresh, inputs, targets, check, gpu)


register(Workload(
    name="seq2seq-train-step",
    description="one seq2seq training step (seq2seq configs only): bidirectional encoder, "
                "bridge, attention decoder, cross-entropy, backward, clipping, Adam",
    setup=setup_seq2seq_train_step, task="seq2seq"))
