"""YOLO26 detector (ultralytics 8.4.190) in Flax NNX: model, loss, weights."""
