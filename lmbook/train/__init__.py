"""The one training loop of the book (Chapter 4): ``Trainer``, ``TrainConfig``, ``History``.

Example::

    from lmbook.train import Trainer, TrainConfig
    from lmbook.data.batching import lm_batch
    from lmbook.metrics import cross_entropy

    def sample(key):                      # pure JAX: runs inside the compiled step
        return lm_batch(train_tokens, key, batch_size=32, context=64)

    def loss_fn(model, batch):            # the model is in training mode here
        inputs, targets = batch
        return cross_entropy(model(inputs), targets)

    cfg = TrainConfig(steps=2000, learning_rate=1e-3, warmup_steps=100, weight_decay=0.1,
                      grad_clip=1.0, eval_every=200, steps_per_call=10)
    trainer = Trainer(model, loss_fn, cfg)
    history = trainer.fit(sample, eval_data=val_batches)   # a list of (inputs, targets)
    lmbook.plots.loss_curves(history)

Schedules and the Optax chain are in :mod:`lmbook.train.config`, Orbax
checkpoints in :mod:`lmbook.train.checkpoint`, data handling in
:mod:`lmbook.train.data`.
"""

from .checkpoint import Checkpointer, DamagedCheckpointError
from .config import TrainConfig, decay_mask, make_optimizer, make_schedule
from .history import History
from .loop import Trainer, TrainingDiverged

__all__ = [
    "Checkpointer",
    "DamagedCheckpointError",
    "History",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "decay_mask",
    "make_optimizer",
    "make_schedule",
]
