"""The open challenges of Chapter 12, one small module each.

- :mod:`lmbook.challenges.quantize`: int8 / int4 weight quantisation (per-channel absmax, group-wise).
- :mod:`lmbook.challenges.dedup`: exact and near-duplicate detection (MinHash, LSH banding).
- :mod:`lmbook.challenges.privacy`: canaries, exposure, extraction, DP-SGD.
- :mod:`lmbook.challenges.interpret`: residual stream, logit lens, linear probes, activation patching.
- :mod:`lmbook.challenges.control`: constrained decoding (token masks, a finite-state format) and steering.

Every module works on the book's own :class:`lmbook.nn.gpt.GPT`, trains with
:class:`lmbook.train.Trainer` and decodes with :func:`lmbook.generate.generate`.
"""
