"""Text generation (Chapter 7): logit filters, sampling, a fast cached decode loop, beam search.

- :mod:`lmbook.generate.filters`: ``top_k_filter``, ``top_p_filter``, ``apply_repetition_penalty``,
  ``process_logits``, ``sample_token``, ``greedy``.
- :mod:`lmbook.generate.loop`: ``generate`` (greedy / temperature / top-k / top-p / repetition penalty /
  stop tokens / batches), one compiled ``lax.while_loop`` over a pre-allocated KV cache.
- :mod:`lmbook.generate.beam`: ``beam_search`` (length-normalised).
- :mod:`lmbook.generate.speculative`: ``speculative_generate`` (a draft model proposes, the target
  verifies; Chapter 14) and ``rewind_cache``.
"""

from .beam import BeamResult, beam_search
from .filters import apply_repetition_penalty, greedy, process_logits, sample_token, top_k_filter, top_p_filter
from .loop import Generation, generate
from .speculative import SpeculativeResult, rewind_cache, speculative_generate

__all__ = [
    "BeamResult",
    "Generation",
    "SpeculativeResult",
    "apply_repetition_penalty",
    "beam_search",
    "generate",
    "greedy",
    "process_logits",
    "rewind_cache",
    "sample_token",
    "speculative_generate",
    "top_k_filter",
    "top_p_filter",
]
