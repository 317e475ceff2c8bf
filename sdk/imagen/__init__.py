"""genrt.sdk.imagen: the Imagen cascade (T5 text encoder, Imagen / Efficient U-Nets, DeepFloyd IF U-Nets),
noise conditioning augmentation, training step and the torch reference of cascade sampling."""

from genrt.sdk.imagen.augment import augment_low_res, upsample_low_res
from genrt.sdk.imagen.cascade import Cascade, StageNoise, draw_noise
from genrt.sdk.imagen.config import (
    CascadeConfig,
    IFUNetConfig,
    ImagenUNetConfig,
    T5EncoderConfig,
    cascade_config,
    if_unet_config,
    imagen_unet_config,
    text_encoder_config,
)
from genrt.sdk.imagen.if_unet import IFUNet
from genrt.sdk.imagen.training import TrainingConfig, training_step
from genrt.sdk.imagen.unet import ImagenUNet

__all__ = [
    "Cascade",
    "CascadeConfig",
    "IFUNet",
    "IFUNetConfig",
    "ImagenUNet",
    "ImagenUNetConfig",
    "StageNoise",
    "T5EncoderConfig",
    "TrainingConfig",
    "augment_low_res",
    "cascade_config",
    "draw_noise",
    "if_unet_config",
    "imagen_unet_config",
    "text_encoder_config",
    "training_step",
    "upsample_low_res",
]
