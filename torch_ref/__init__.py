"""Torch-side helpers for checking numpy_rnn against torch.nn (imports torch; numpy_rnn never
does)."""

from torch_ref.convert import load_numpy_state, to_numpy_state

__all__ = ["load_numpy_state", "to_numpy_state"]
