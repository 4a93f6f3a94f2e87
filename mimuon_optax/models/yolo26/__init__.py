"""YOLO26 detector (ultralytics 8.4.190) in Flax NNX: model, loss, weights.

  cfg = YOLO26Config.from_scale("n", num_classes=80)   # n, s, m, l, x
  model = load_ultralytics_state_dict(cfg, state_dict)  # or YOLO26(cfg, rngs=)
  preds = model(images_BxHxWx3)                # train mode: raw, both heads
  total, parts = e2e_loss(preds, targets, o2m_weight(epoch, epochs),
                          image_size=(H, W))
  model.eval(); out = model(images_BxHxWx3)   # decoded boxes, probabilities
  dets_Bxkx6 = postprocess(out["one2one"]["boxes"], out["one2one"]["scores"])
  state_dict = to_ultralytics_state_dict(model)
  tx = yolo26_musgd(...)                       # ultralytics' MuSGD groups
"""

from mimuon_optax.models.yolo26.modeling import YOLO26
from mimuon_optax.models.yolo26.modeling import YOLO26Config
from mimuon_optax.models.yolo26.modeling import nms_postprocess
from mimuon_optax.models.yolo26.modeling import postprocess
from mimuon_optax.models.yolo26.params import fuse_batchnorm
from mimuon_optax.models.yolo26.params import load_ultralytics_state_dict
from mimuon_optax.models.yolo26.params import save_ultralytics_safetensors
from mimuon_optax.models.yolo26.params import to_ultralytics_state_dict
from mimuon_optax.models.yolo26.loss import Targets
from mimuon_optax.models.yolo26.loss import check_targets
from mimuon_optax.models.yolo26.loss import e2e_loss
from mimuon_optax.models.yolo26.loss import o2m_weight
from mimuon_optax.models.yolo26.loss import targets_from_ultralytics
from mimuon_optax.models.yolo26.optim import yolo26_param_groups
from mimuon_optax.models.yolo26.optim import yolo26_musgd
from mimuon_optax.models.yolo26.optim import yolo26_weight_dimension_numbers

__all__ = (
    "Targets",
    "YOLO26",
    "YOLO26Config",
    "check_targets",
    "e2e_loss",
    "fuse_batchnorm",
    "load_ultralytics_state_dict",
    "nms_postprocess",
    "o2m_weight",
    "postprocess",
    "save_ultralytics_safetensors",
    "targets_from_ultralytics",
    "to_ultralytics_state_dict",
    "yolo26_musgd",
    "yolo26_param_groups",
    "yolo26_weight_dimension_numbers",
)
