"""The character-level model in torch.nn: the oracle for ``numpy_rnn.model.CharRNN``.

Embedding ``(V, E)`` -> ``nn.LSTM``/``nn.GRU``/``nn.RNN`` stack of ``num_layers`` x ``H`` ->
``nn.Linear(H, V)``, built from the same :class:`numpy_rnn.model.ModelConfig`. The attribute
names (``encoder``, ``rnn``, ``decoder``) make the state-dict keys identical to numpy_rnn's:
``encoder.weight``, ``rnn.weight_ih_l0`` ..., ``decoder.weight``, ``decoder.bias``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from numpy_rnn.model import ModelConfig

TorchState = tuple[torch.Tensor, ...]  # (h, c) for the LSTM, (h,) otherwise; each (L, B, H)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def torch_dtype(config: ModelConfig) -> torch.dtype:
    """The torch dtype of ``config.dtype`` ("float32" or "float64")."""
    return _DTYPES[config.dtype]


class CharRNN(nn.Module):
    """``logits, state = model(tokens, state)``, the contract of numpy_rnn's CharRNN.

    ``tokens`` (B, T) int64 -> ``logits`` (B, T, V). The recurrent stack runs time-major, as
    numpy_rnn's does: the tokens are transposed to (T, B) before the embedding and the logits
    back to (B, T, V) at the end. ``state`` is a tuple ``(h, c)`` for the LSTM and ``(h,)`` for
    the GRU and RNN, each (L, B, H), or None for zeros; the final state comes back in the same
    form. The RNN cell uses tanh, as numpy_rnn's model does.

    Weights get torch's default initialisation; the backends overwrite them with numpy_rnn's
    seeded ones, so the same seed means the same start in both.

    Dropout: the stack is built with ``dropout=0`` and never draws masks of its own. In training
    the caller passes the keep masks between the layers (``dropout_masks``, drawn by the
    driver), and the stack runs one layer at a time with them in between (:class:`LayerwiseRNN`),
    under the same parameters and state-dict keys.
    """

    def __init__(self, config: ModelConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config
        dtype = torch_dtype(config)
        self.encoder = nn.Embedding(config.vocab_size, config.input_size, dtype=dtype,
                                    device=device)
        self.rnn = _RNNS[config.cell](config.input_size, config.hidden_size,
                                      num_layers=config.num_layers, dropout=0.0, dtype=dtype,
                                      device=device)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, dtype=dtype,
                                 device=device)
        # A plain attribute, not a submodule: it holds no parameters of its own in the state.
        self.__dict__["layerwise"] = LayerwiseRNN(self.rnn)
        self.layerwise: LayerwiseRNN

    @property
    def num_states(self) -> int:
        """2 for the LSTM (h, c), 1 otherwise (h)."""
        return 2 if self.config.cell == "lstm" else 1

    def forward(self, tokens: torch.Tensor, state: TorchState | None = None,
                dropout_masks: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, TorchState]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the final states, each ``(L, B, H)``.

        ``dropout_masks``: ``L - 1`` scaled masks ``(T, B, H)`` multiplied into the outputs of
        layers ``0 .. L-2`` (training with dropout), or None for none."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be 2-D (B, T), got shape {tuple(tokens.shape)}")
        if state is not None and (not isinstance(state, tuple) or len(state) != self.num_states):
            names = "(h, c)" if self.num_states == 2 else "(h,)"
            raise TypeError(f"state must be a tuple {names} or None")
        x = self.encoder(tokens.t())                       # (T, B, E): the stack runs time-major
        if state is None:
            hx = None
        else:
            hx = state if self.num_states == 2 else state[0]
        if dropout_masks:
            out, final = self.layerwise(x, hx, dropout_masks)
        else:
            out, final = self.rnn(x, hx)                   # out (T, B, H)
        logits = self.decoder(out)                         # (T, B, V)
        final = tuple(final) if self.num_states == 2 else (final,)
        return logits.transpose(0, 1), final


class LayerwiseRNN:
    """Run a multi-layer ``nn.LSTM``/``nn.GRU``/``nn.RNN`` one layer at a time, multiplying the
    output of every layer but the last by a given mask: dropout with the driver's masks
    instead of torch's own draws.

    The parameters stay the stack's own (same names, same state-dict keys, same gradients):
    :func:`torch.func.functional_call` lends layer ``l``'s weights to a one-layer module of the
    same kind, which runs torch's own fused kernel. That is what ``nn.LSTM`` does internally
    when it applies dropout, so this path is as fast as the built-in one.
    """

    _NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

    def __init__(self, rnn: nn.RNNBase) -> None:
        self.rnn = rnn
        self._templates: dict[Any, nn.RNNBase] = {}

    def _template(self, layer: int) -> nn.RNNBase:
        """A one-layer module shaped like layer ``layer`` of the stack (its own weights unused)."""
        rnn = self.rnn
        key = (layer > 0, rnn.weight_ih_l0.device, rnn.weight_ih_l0.dtype)
        if key not in self._templates:
            D = 2 if rnn.bidirectional else 1
            width = rnn.input_size if layer == 0 else D * (rnn.proj_size or rnn.hidden_size)
            kw: dict[str, Any] = dict(num_layers=1, bias=rnn.bias, batch_first=rnn.batch_first,
                                      bidirectional=rnn.bidirectional,
                                      device=rnn.weight_ih_l0.device,
                                      dtype=rnn.weight_ih_l0.dtype)
            if isinstance(rnn, nn.LSTM):
                kw["proj_size"] = rnn.proj_size
            if type(rnn) is nn.RNN:
                kw["nonlinearity"] = rnn.nonlinearity
            with torch.random.fork_rng(devices=[]):   # its init must not move the generator
                # (nn.RNN/GRU/LSTM take (input_size, hidden_size, ...); RNNBase's stub types
                # the first argument as its mode string)
                self._templates[key] = type(rnn)(width, rnn.hidden_size,  # type: ignore[arg-type]
                                                 **kw)
        return self._templates[key]

    def __call__(self, x: Any, hx: Any, masks: Sequence[torch.Tensor]) -> tuple[Any, Any]:
        """``x`` as for the stack (a tensor or a PackedSequence), ``hx`` None, a tensor
        ``(L*D, B, H)`` or an LSTM pair, ``masks`` ``L - 1`` tensors shaped like the layer
        outputs; returns the stack's ``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM)."""
        rnn = self.rnn
        L, D = rnn.num_layers, 2 if rnn.bidirectional else 1
        if len(masks) != L - 1:
            raise ValueError(f"expected {L - 1} dropout masks, got {len(masks)}")
        finals: list[list[torch.Tensor]] = []
        for layer in range(L):
            params = {}
            for d in range(D):
                suffix = "_reverse" if d else ""
                for name in self._NAMES:
                    full = f"{name}_l{layer}{suffix}"
                    if hasattr(rnn, full):
                        params[f"{name}_l0{suffix}"] = getattr(rnn, full)
            h_l = None
            if hx is not None:
                rows = slice(layer * D, (layer + 1) * D)
                h_l = tuple(h[rows] for h in hx) if isinstance(hx, tuple) else hx[rows]
            x, final = functional_call(self._template(layer), params, (x, h_l))
            finals.append(list(final) if isinstance(final, tuple) else [final])
            if layer < L - 1:
                x = _scale(x, masks[layer])
        stacked = [torch.cat([f[j] for f in finals]) for j in range(len(finals[0]))]
        return x, (tuple(stacked) if len(stacked) == 2 else stacked[0])


def _scale(x: Any, mask: torch.Tensor) -> Any:
    """``x * mask`` for a tensor, or for the data of a PackedSequence (mask already packed)."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return x._replace(data=x.data * mask)
    return x * mask
