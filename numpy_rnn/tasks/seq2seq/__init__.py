"""Sequence to sequence with attention: read one sequence, write another (grapheme to phoneme on
the CMU Pronouncing Dictionary, or any ``source<TAB>target`` file). One idea per module:

* :mod:`.model`: the encoder-decoder with Luong's global attention (:class:`Seq2Seq`), the
  forward and the hand-written backward;
* :mod:`.config`: its config and inputs, and the checks and rules its torch twin shares;
* :mod:`.inference`: decoding's per-token tables and the session of one memory;
* :mod:`.data`: a paired corpus as the driver reads one, the encoding of sources and targets
  into token ids, and the training batches;
* :mod:`.translate`: from sources to outputs (greedy and beam search) and their scores (loss,
  WER, PER); :class:`Translator`, what ``numpy_rnn.load`` gives for a seq2seq checkpoint;
* :mod:`.sizes`: the model's parameter count and memory, from its shapes;
* :mod:`.plot`: the picture of where the decoder looked (``translate --plot``);
* :mod:`.task`: the task as the driver sees it and its command line (train flags,
  ``translate``).
"""

from __future__ import annotations

from .data import (
    CMUDICT,
    CMUDICT_STRESS,
    PAD_CHAR,
    PAD_TOKEN,
    SPECIALS,
    PairBatches,
    PairData,
    encode_sources,
    encode_targets,
    pair_data,
)
from .model import ATTENTIONS, BOS, EOS, PAD, Seq2Seq, Seq2SeqConfig, Seq2SeqInputs
from .plot import MAX_PLOT_WORDS, plot_translation_attention
from .task import (
    EVALUATION_BEAM,
    EVALUATION_SPLIT,
    EVALUATION_SPLITS,
    TRANSLATE,
    VALIDATION_WORDS,
    Seq2SeqTask,
)
from .translate import (
    CHUNK,
    MAX_OUTPUT,
    Translator,
    decode_hypotheses,
    decode_words,
    score_groups,
)

__all__ = ["ATTENTIONS", "BOS", "CHUNK", "CMUDICT", "CMUDICT_STRESS", "EOS", "EVALUATION_BEAM",
           "EVALUATION_SPLIT", "EVALUATION_SPLITS", "MAX_OUTPUT", "MAX_PLOT_WORDS", "PAD",
           "PAD_CHAR", "PAD_TOKEN", "SPECIALS", "TRANSLATE", "VALIDATION_WORDS", "PairBatches",
           "PairData", "Seq2Seq", "Seq2SeqConfig", "Seq2SeqInputs", "Seq2SeqTask", "Translator",
           "decode_hypotheses", "decode_words", "encode_sources", "encode_targets", "pair_data",
           "plot_translation_attention", "score_groups"]
