"""Neural-network building blocks of the book, as Flax NNX modules.

Import the submodules directly: ``lmbook.nn.layers``, ``lmbook.nn.rnn``,
``lmbook.nn.attention``, ``lmbook.nn.transformer``, ``lmbook.nn.gpt``.
"""
