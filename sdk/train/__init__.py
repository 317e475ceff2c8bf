"""genrt.sdk.train: the small training loop shared by the recipes that train genrt's demo models
(``genrt.sdk.train.loop``) and one recipe per family (``genrt.sdk.train.recipes``)."""

from genrt.sdk.train.loop import EMA, LoopConfig, TrainState, latest_checkpoint, train, write_loss_curve

__all__ = ["EMA", "LoopConfig", "TrainState", "latest_checkpoint", "train", "write_loss_curve"]
