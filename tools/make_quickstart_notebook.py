import nbformat as nbf
nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
md("""# mimuon_optax quickstart

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/)

MiMuon (Mixed Muon) is Muon made cautious: for every matrix it measures the
minimum gap between the distinct nonzero singular values of the momentum and
orthogonalizes (Muon step) only when that gap is at least `tau`; otherwise it
takes a plain momentum-SGD step. This notebook:

1. installs the library,
2. trains a small MLP on sklearn's digits with `mimuon` inside an `optax.chain`,
3. reads the per-matrix diagnostics (which matrices were orthogonalized, their gaps),
4. changes `tau` on the fly with `optax.inject_hyperparams`."""),
code("""# Install: in Colab this clones the repository; locally (or in CI) an
# existing install is reused.
import importlib.util, subprocess, sys
REPO = "https://github.com/mimuon/mimuon_optax"  # set to your fork if needed
if importlib.util.find_spec("mimuon_optax") is None:
    subprocess.run(["git", "clone", "--depth", "1", REPO, "mimuon_optax_repo"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "mimuon_optax_repo"], check=True)
    sys.path.insert(0, "mimuon_optax_repo")
if importlib.util.find_spec("sklearn") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "scikit-learn"], check=True)"""),
code("""import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import mimuon_optax

digits = load_digits()
x = jnp.asarray(digits.data / 16.0, jnp.float32)   # (1797, 64)
y = jnp.asarray(digits.target)
x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]
print(x_train.shape, x_test.shape, jax.devices())"""),
md("""## A two-layer MLP and a plain `optax.chain` loop

Matrices (`w1`, `w2`) go to MiMuon; the biases go to AdamW (the default labels)."""),
code("""def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, 128)) / 8.0, "b1": jnp.zeros(128),
        "w2": jax.random.normal(k2, (128, 10)) / 11.0, "b2": jnp.zeros(10),
    }

def loss_fn(params, x, y):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

def accuracy(params, x, y):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    return float(jnp.mean(jnp.argmax(h @ params["w2"] + params["b2"], -1) == y))

def train(tx, steps=300, seed=0):
    params = init(jax.random.key(seed))
    state = tx.init(params)

    @jax.jit
    def step(params, state, key):
        idx = jax.random.randint(key, (128,), 0, x_train.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    key = jax.random.key(seed + 1)
    for t in range(steps):
        key, sub = jax.random.split(key)
        params, state, loss = step(params, state, sub)
    return params, state, float(loss)

tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    mimuon_optax.mimuon(learning_rate=optax.cosine_decay_schedule(0.05, 300), tau=1e-3,
                        adam_learning_rate=3e-3),
)
params, state, last_loss = train(tx)
print(f"last train loss {last_loss:.3f}, test accuracy {accuracy(params, x_test, y_test):.3f}")"""),
md("""## Per-matrix diagnostics

`mimuon_optax.mix_diagnostics` finds the MiMuon state anywhere inside the
optimizer state (chain, partition, inject_hyperparams, MultiSteps). Each field
has one entry per matrix: the last decision, the last measured minimum gap
(absolute and relative to the largest singular value) and how many steps were
orthogonalized."""),
code("""diag = mimuon_optax.mix_diagnostics(state)
for name in ("w1", "w2"):
    print(f"{name}: orthogonalized={bool(diag.orthogonalized[name])}, "
          f"min_gap={float(diag.min_gap[name]):.3e}, rel_gap={float(diag.rel_gap[name]):.3e}, "
          f"Muon steps {int(diag.orth_count[name])} / {int(diag.count)}")"""),
md("""## Muon, MiMuon and SGD are one knob apart

`tau=0` always orthogonalizes (exactly `muon()`), `tau=inf` never does
(momentum SGD with decoupled weight decay)."""),
code("""for name, opt in [
    ("muon", mimuon_optax.muon(0.05, adam_learning_rate=3e-3)),
    ("mimuon tau=0", mimuon_optax.mimuon(0.05, tau=0.0, adam_learning_rate=3e-3)),
    ("mimuon tau=1e-3", mimuon_optax.mimuon(0.05, tau=1e-3, adam_learning_rate=3e-3)),
    ("mimuon tau=inf", mimuon_optax.mimuon(0.05, tau=jnp.inf, adam_learning_rate=3e-3)),
]:
    p, s, l = train(opt, steps=200)
    print(f"{name:16s} loss {l:.3f}  test acc {accuracy(p, x_test, y_test):.3f}")"""),
md("""## Changing `tau` on the fly

`optax.inject_hyperparams` turns numeric hyperparameters into state; `ns_steps`
must stay static. Changing `tau` in the state takes effect at the next step
without recompiling."""),
code("""tx = optax.inject_hyperparams(mimuon_optax.mimuon, static_args=("ns_steps",))(
    learning_rate=0.05, tau=0.0, adam_learning_rate=3e-3)
params = init(jax.random.key(0))
state = tx.init(params)
step = jax.jit(lambda g, s, p: tx.update(g, s, p))
grads = jax.grad(loss_fn)(params, x_train[:256], y_train[:256])
for tau in [0.0, 1e-2, jnp.inf]:
    state.hyperparams["tau"] = jnp.full_like(state.hyperparams["tau"], tau)
    _, state = step(grads, state, params)
    diag = mimuon_optax.mix_diagnostics(state)
    print(f"tau={float(tau):g}: orthogonalized", {k: bool(v) for k, v in diag.orthogonalized.items()
                                               if not isinstance(v, optax.MaskedNode)})
print("compilations:", step._cache_size())"""),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/quickstart.ipynb")
