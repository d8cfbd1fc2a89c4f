import time, numpy as np, jax, jax.numpy as jnp
from flax import nnx
import lmbook
from lmbook.data import instructions as ins
from lmbook.data.batching import lm_batch, sample_rows
from lmbook.nn.gpt import GPT, GPTConfig, gpt_loss
from lmbook.tokenizers import CharTokenizer
from lmbook.train import Trainer, TrainConfig
from lmbook.generate import generate
from lmbook.metrics import cross_entropy
T0=time.perf_counter()
CHAT = ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
captions_de, captions_en = lmbook.data.multi30k("train")
reviews = [s for s, _ in lmbook.data.sentiment()]
facts = ins.arithmetic_facts("train")
rng = np.random.default_rng(0)
lines = captions_en[:8000] + captions_de[:3000] + reviews + facts * 2
lines = [lines[i] for i in rng.permutation(len(lines))]
corpus = "\n".join(lines) + "\n"
tok = CharTokenizer.train(corpus, special_tokens=CHAT, unk_token="?")
print(tok.vocab_size, len(corpus))
ids = jnp.asarray(tok.encode(corpus), jnp.int32)
CTX=128
cfg = GPTConfig(vocab_size=tok.vocab_size, context=CTX, n_layers=2, n_heads=4, d_model=128)
base = GPT(cfg, rngs=nnx.Rngs(0))
t=time.perf_counter()
tr = Trainer(base, gpt_loss, TrainConfig(steps=300, learning_rate=3e-3, warmup_steps=30, min_learning_rate=3e-4, weight_decay=0.1, grad_clip=1.0, batch_size=32, steps_per_call=20, progress=False))
h = tr.fit(lambda k: lm_batch(ids, k, 32, 64))
print("pretrain", time.perf_counter()-t, h.final_loss)

def render(msgs, gen=False):
    s = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in msgs)
    return s + ("<|assistant|>" if gen else "")
END = tok.special_id("<|end|>"); AST = tok.special_id("<|assistant|>")
def encode_chat(msgs):
    ids, mask = [], []
    for m in msgs:
        head = tok.encode(f"<|{m['role']}|>", allow_special=True); body = tok.encode(m["content"]) + [END]
        ids += head + body; mask += [0]*len(head) + [int(m["role"]=="assistant")]*len(body)
    return ids[:-1], ids[1:], mask[1:]
def chat_batch(convs, L):
    X = np.zeros((len(convs), L), np.int32); Y = X.copy(); M = np.zeros((len(convs), L), np.float32)
    for i, c in enumerate(convs):
        x, y, m = encode_chat(c); n = min(len(x), L)
        X[i,:n], Y[i,:n], M[i,:n] = x[:n], y[:n], m[:n]
    return jnp.asarray(X), jnp.asarray(Y), jnp.asarray(M)
train = ins.instruction_tasks("train", {"arithmetic":1500, "sentiment":1000, "translate":500, "summarise":500}, seed=0) + ins.dialogues("train", 600, seed=0)
convs = [ex.conversation for ex in train]
lens = [len(encode_chat(c)[0]) for c in convs]; print("len pct", np.percentile(lens,[50,90,99,100]))
data = chat_batch(convs, CTX)
def masked_loss(model, batch):
    x, y, m = batch
    return cross_entropy(model(x), y, m)
def sft(masked, steps=300):
    model = GPT(cfg, rngs=nnx.Rngs(0)); nnx.update(model, nnx.state(base))
    lf = masked_loss if masked else (lambda model, b: cross_entropy(model(b[0]), b[1], (b[0] != 0) | (b[2] > 0)))
    t=time.perf_counter()
    h = Trainer(model, lf, TrainConfig(steps=steps, learning_rate=2e-3, warmup_steps=20, min_learning_rate=2e-4, weight_decay=0.1, grad_clip=1.0, batch_size=32, steps_per_call=20, progress=False)).fit(lambda k: sample_rows(data, k, 32))
    print("sft", masked, time.perf_counter()-t, h.final_loss)
    return model
sftm = sft(True)
test = ins.arithmetic_tasks("test", 128, seed=1) + ins.sentiment_tasks("test", 64, seed=1) + ins.dialogues("test", 64, seed=1)
def answer(model, exs, n=24, temp=0.0, key=None):
    prompts = [tok.encode(render(ex.prompt, True), allow_special=True) for ex in exs]
    t=time.perf_counter()
    g = generate(model, prompts, n, temperature=temp, key=key, stop_tokens=[END])
    outs = [tok.decode(g.new_tokens(i), skip_special=True) for i in range(len(exs))]
    return outs
t=time.perf_counter(); outs = answer(sftm, test); print("gen", time.perf_counter()-t)
for task in ["arithmetic","sentiment","dialogue_arithmetic","dialogue_sentiment"]:
    r=[ins.true_reward(e,o) for e,o in zip(test,outs) if e.task==task]; print(task, np.mean(r), len(r))
for e,o in list(zip(test,outs))[::20]: print(repr(e.prompt[-1]["content"][:50]), "->", repr(o), "| ref", e.reference)
summ = ins.summarisation_tasks("test", 5, seed=1)+ins.translation_tasks("test",5,seed=1)
for e,o in zip(summ, answer(sftm, summ, 60)): print(repr(o), "| ref", e.reference)
print("total", time.perf_counter()-T0)
