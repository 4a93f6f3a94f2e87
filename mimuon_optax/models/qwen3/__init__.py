"""Qwen3 causal language model in Flax NNX, with HF checkpoint conversion.

  cfg = Qwen3Config.tiny()                      # or .qwen3_0_6b()
  model = Qwen3ForCausalLM(cfg, rngs=nnx.Rngs(0))
  logits_BxTxV = model(input_ids_BxT, attention_mask_BxT)
  model = load_hf_checkpoint("path/to/Qwen3-0.6B", scan_layers=True)
  dims = qwen3_weight_dimension_numbers(nnx.state(model, nnx.Param))
  loss = next_token_loss(model, tokens_BxTp1)   # the LM loss
"""

from mimuon_optax.models.qwen3.modeling import Qwen3Config
from mimuon_optax.models.qwen3.modeling import Qwen3ForCausalLM
from mimuon_optax.models.qwen3.modeling import generate
from mimuon_optax.models.qwen3.loss import next_token_loss
from mimuon_optax.models.qwen3.optim import qwen3_weight_dimension_numbers
from mimuon_optax.models.qwen3.params import load_hf_checkpoint
from mimuon_optax.models.qwen3.params import save_hf_checkpoint

__all__ = (
    "Qwen3Config",
    "Qwen3ForCausalLM",
    "generate",
    "load_hf_checkpoint",
    "next_token_loss",
    "qwen3_weight_dimension_numbers",
    "save_hf_checkpoint",
)
