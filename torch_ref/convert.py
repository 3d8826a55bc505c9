"""Move parameters between a torch module and a numpy_rnn state dict, under the same names.

torch.nn's recurrent modules and numpy_rnn's layers use the same parameter names, shapes and gate
layout, so a state dict is a plain ``name -> array`` mapping in both directions. Torch's RNG stream
cannot be replayed in NumPy; parity tests therefore build a torch module, copy its weights with
``to_numpy_state`` into the NumPy layer (``layer.load_state_dict``) and compare the two.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def to_numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Copy every parameter of ``module`` into a fresh NumPy array, keyed by its torch name.

    The arrays keep the module's dtype (float32 stays float32) and share no memory with torch.
    Buffers are not included: torch's recurrent modules have none.
    """
    return {name: p.detach().cpu().numpy().copy() for name, p in module.named_parameters()}


def load_numpy_state(module: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Copy NumPy arrays into ``module``'s parameters of the same names, in place (strict).

    Every parameter of ``module`` must be in ``state``, no extra key is allowed and every shape
    must match; otherwise a ``KeyError``/``ValueError`` names the problems and nothing is changed.
    Values are converted to each parameter's dtype. Runs under ``torch.no_grad()`` so the copy is
    not recorded by autograd.
    """
    params = dict(module.named_parameters())
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        raise KeyError(f"load_numpy_state: missing keys {missing}, unexpected keys {unexpected}")
    bad = [f"{k}: expected {tuple(p.shape)}, got {np.shape(state[k])}"
           for k, p in params.items() if tuple(p.shape) != np.shape(state[k])]
    if bad:
        raise ValueError("load_numpy_state: wrong shapes: " + "; ".join(bad))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.as_tensor(np.asarray(state[k])))
