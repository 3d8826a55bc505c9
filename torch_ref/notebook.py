"""Read the weights the original notebook saved, for the NumPy model (or either backend).

The notebook trained a 3-layer LSTM of hidden size 512 in float64, with an embedding as wide as
the vocabulary, and saved it with ``torch.save(rnn.state_dict(), FILE.pt)``. Its keys are those of
our CharRNN except that the recurrent stack was called ``lstm``::

    encoder.weight (V, V)   lstm.weight_ih_l0 (2048, V)   lstm.weight_hh_l0 (2048, 512)
    lstm.bias_ih_l0 (2048,) lstm.bias_hh_l0 (2048,)  ...  (layers 1 and 2: weight_ih (2048, 512))
    decoder.weight (V, 512) decoder.bias (V,)

``load_notebook_state`` renames ``lstm.*`` to ``rnn.*``, infers the :class:`ModelConfig` from the
shapes, checks that they are exactly those of a CharRNN with that config, and returns NumPy
float64 arrays ready for ``CharRNN.load_state_dict`` or ``Backend.load_state_dict``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import torch

from numpy_rnn.driver.checkpoint import check_weights
from numpy_rnn.tasks.lm import CharRNN
from numpy_rnn.tasks.model import ModelConfig

NOTEBOOK_NUM_LAYERS = 3
NOTEBOOK_HIDDEN_SIZE = 512

_LAYER_KEY = re.compile(r"rnn\.weight_ih_l(\d+)$")


def load_notebook_state(path: str | os.PathLike[str], *,
                        num_layers: int | None = NOTEBOOK_NUM_LAYERS,
                        hidden_size: int | None = NOTEBOOK_HIDDEN_SIZE,
                        ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Load a notebook ``state_dict`` file: returns ``(config, state)``.

    ``state`` maps our names (``encoder.weight``, ``rnn.weight_ih_l0``, ..., ``decoder.bias``) to
    float64 arrays; ``config`` is the LSTM CharRNN they fit (float64, no dropout, ``embedding_dim``
    None when it equals the vocabulary size, as in the notebook). ``num_layers`` and
    ``hidden_size`` are the architecture the file must have (the notebook's 3 x 512 by default;
    None accepts whatever the shapes say).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` when the file is not a
    torch-saved state dict (it is read with ``weights_only=True``: no code in it is run) or its
    keys and shapes are not those of such an LSTM CharRNN.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"notebook state file {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (UnpicklingError, RuntimeError, ...)
        raise ValueError(f"{path} is not a torch.save'd state dict that can be loaded with "
                         f"weights_only=True: {type(exc).__name__}: {exc}") from exc
    what = f"{path} is not a notebook CharRNN state dict"
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"{what}: expected a mapping of name -> tensor, got "
                         f"{type(raw).__name__}")
    state: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{what}: entry {key!r} is a {type(value).__name__}, expected a "
                             "tensor under a string key")
        if not value.is_floating_point():
            raise ValueError(f"{what}: {key} has dtype {value.dtype}, expected floating point")
        name = "rnn." + key[len("lstm."):] if key.startswith("lstm.") else key
        if name in state:
            raise ValueError(f"{what}: {key} appears both as lstm.* and rnn.*")
        state[name] = value.detach().to(torch.float64).numpy().copy()

    config = _infer_config(state, what)
    if num_layers is not None and config.num_layers != num_layers:
        raise ValueError(f"{what}: it has {config.num_layers} LSTM layers, expected {num_layers}")
    if hidden_size is not None and config.hidden_size != hidden_size:
        raise ValueError(f"{what}: its hidden size is {config.hidden_size}, expected "
                         f"{hidden_size}")
    # The same check every checkpoint gets: exactly the names and shapes of this CharRNN.
    check_weights(state, config, where=what)
    want = CharRNN(config, seed=0).params
    return config, {k: state[k] for k in want}   # in the model's parameter order


def _infer_config(state: Mapping[str, np.ndarray], what: str) -> ModelConfig:
    """The LSTM ModelConfig the shapes of ``encoder.weight``, ``rnn.weight_hh_l0`` and the
    number of ``rnn.weight_ih_l*`` keys describe (checked in full by the caller)."""
    for key in ("encoder.weight", "rnn.weight_hh_l0"):
        if key not in state:
            raise ValueError(f"{what}: no {key!r} (notebook keys are encoder.weight, "
                             "lstm.weight_ih_l0, ..., decoder.weight, decoder.bias)")
        if state[key].ndim != 2:
            raise ValueError(f"{what}: {key} has shape {state[key].shape}, expected 2-D")
    V, E = state["encoder.weight"].shape
    G, H = state["rnn.weight_hh_l0"].shape
    if G != 4 * H:
        raise ValueError(f"{what}: rnn.weight_hh_l0 has shape {(G, H)}, an LSTM's is (4H, H)")
    layers = sorted(int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k)))
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{what}: LSTM layers numbered {layers}, expected 0, 1, ...")
    return ModelConfig(vocab_size=int(V), hidden_size=int(H), num_layers=len(layers),
                       cell="lstm", embedding_dim=None if E == V else int(E), dropout=0.0,
                       dtype="float64")
