"""Data, fully sharded and tensor parallelism side by side on simulated devices (Chapter 11).

:func:`compare_layouts` trains the same GPT with each layout through
:class:`lmbook.train.Trainer` and reports losses, bytes per device, the
collectives of the compiled step and where the shards of two parameters live.
Simulated CPU devices must exist before JAX starts, so a notebook calls it
through :func:`run_with_devices`, which runs it in a fresh Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["compare_layouts", "run_with_devices"]

_SHOWN = ("blocks/0/mlp_in/kernel", "blocks/0/attn/out/kernel")


def _placement(array: Any) -> list[dict[str, Any]]:
    """Which devices hold which block of ``array``: ``[{"rows": [a, b], "cols": [c, d], "devices": [...]}]``."""
    blocks: dict[tuple[int, int, int, int], list[int]] = {}
    for device, index in array.sharding.devices_indices_map(array.shape).items():
        (r0, r1, _), (c0, c1, _) = (s.indices(n) for s, n in zip(index, array.shape))
        blocks.setdefault((r0, r1, c0, c1), []).append(device.id)
    return [{"rows": [k[0], k[1]], "cols": [k[2], k[3]], "devices": sorted(v)} for k, v in sorted(blocks.items())]


def compare_layouts(steps: int = 6, batch_size: int = 16, context: int = 64, n_layers: int = 2, n_heads: int = 4,
                    d_model: int = 128, model_axis: int = 2) -> dict[str, Any]:
    """Train one GPT on Tiny Shakespeare with one device and with each layout over all devices.

    Returns (JSON-friendly) ``{layout: {"losses", "mesh", "bytes_per_device", "collectives",
    "placement"}}`` for ``"single"``, ``"dp"``, ``"fsdp"`` and ``"tp"`` (a ``data x model`` mesh
    with ``model_axis`` devices on the model axis).
    """
    import jax
    import jax.numpy as jnp

    from lmbook import runtime
    from lmbook.data import load_text
    from lmbook.data.batching import lm_batch
    from lmbook.nn.build import build
    from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
    from lmbook.tokenizers import CharTokenizer
    from lmbook.train import TrainConfig, Trainer
    from lmbook.train.sharding import bytes_per_device, collectives, path_of

    n = jax.device_count()
    text = load_text("tinyshakespeare")
    tok = CharTokenizer.train(text)
    ids = jnp.asarray(tok.encode(text[:300_000]), jnp.int32)
    cfg = GPTConfig(vocab_size=tok.vocab_size, context=context, n_layers=n_layers, n_heads=n_heads, d_model=d_model)

    def sample(key: Any) -> Any:
        return lm_batch(ids, key, batch_size, context)

    meshes = {"single": None, "dp": runtime.make_mesh(), "fsdp": runtime.make_mesh(),
              "tp": runtime.make_mesh((n // model_axis, model_axis), ("data", "model"))}
    out: dict[str, Any] = {}
    for layout, mesh in meshes.items():
        # one step per call: fit() reuses the one-step program compiled for the HLO below (JAX caches the
        # compilation) instead of compiling a second, multi-step one
        tc = TrainConfig(steps=steps, learning_rate=3e-3, steps_per_call=1, progress=False,
                         data_parallel=mesh is not None, precision="float32")
        trainer = Trainer(build(GPT, cfg), gpt_loss, tc, mesh=mesh,
                          layout="dp" if layout == "single" else layout)
        hlo = trainer.compiled_step(sample).as_text()
        history = trainer.fit(sample)
        params = trainer._state[0]
        flat = {path_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
        out[layout] = {
            "losses": [float(x) for x in history.loss],
            "mesh": {} if mesh is None else {k: int(v) for k, v in mesh.shape.items()},
            "bytes_per_device": {str(k): v for k, v in bytes_per_device(trainer._state).items()},
            "collectives": {k: list(v) for k, v in collectives(hlo).items()},
            "placement": {name: {"shape": list(flat[name].shape), "blocks": _placement(flat[name])} for name in _SHOWN},
        }
    return out


def run_with_devices(n_devices: int, function: str, *, path: str | None = None, **kwargs: Any) -> Any:
    """Run ``module:function(**kwargs)`` in a fresh Python process that sees ``n_devices`` simulated
    CPU devices, and return its (JSON) result; ``path`` is a folder searched first for ``module``
    (e.g. one a notebook wrote). Raises ``RuntimeError`` with the child's error output."""
    module, name = function.split(":")
    code = (
        "import json, sys\n"
        f"import lmbook.runtime as rt; rt.simulate_cpu_devices({int(n_devices)})\n"
        f"from {module} import {name}\n"
        f"result = {name}(**json.loads(sys.argv[1]))\n"
        "print('RESULT ' + json.dumps(result))\n"
    )
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{function} failed with {n_devices} devices:\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{function} printed no result:\n{proc.stdout[-2000:]}")
