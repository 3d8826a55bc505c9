"""The driver: one training loop for every task and both backends, checkpoints, the command line.

It owns the data, batching, schedule, logging, checkpoints and every random number of a run; a
backend (:mod:`numpy_rnn.driver.backend`, ``torch_ref.backend``) only computes. It depends on the
tasks (:mod:`numpy_rnn.tasks`) and the library (:mod:`numpy_rnn.nn`), never the other way.
"""
