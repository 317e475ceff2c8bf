"""Building blocks shared by the VQGAN, latent-diffusion and Imagen families."""

from genrt.sdk.nn.attention import Attention, SpatialSelfAttention, multi_head_attention
from genrt.sdk.nn.embeddings import TimestepEmbedding, sinusoidal_embedding
from genrt.sdk.nn.resnet import ResnetBlock
from genrt.sdk.nn.sampling import Downsample, Upsample

__all__ = [
    "Attention",
    "Downsample",
    "ResnetBlock",
    "SpatialSelfAttention",
    "TimestepEmbedding",
    "Upsample",
    "multi_head_attention",
    "sinusoidal_embedding",
]
