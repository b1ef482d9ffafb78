"""Tokenizer architectures: CNN and ViT encoders/decoders, discriminators, Tokenizer."""

from vqtok.models.cnn import Decoder, Encoder
from vqtok.models.discriminator import PatchGAN, StyleGANDiscriminator, blur_downsample, build_discriminator
from vqtok.models.tokenizer import Tokenizer, build_tokenizer, encoder_last_layer_path, get_last_layer, last_layer_path
from vqtok.models.vit import VIT_SIZES, ViTDecoder, ViTEncoder, decode_variant

__all__ = [
  "Decoder",
  "Encoder",
  "PatchGAN",
  "StyleGANDiscriminator",
  "Tokenizer",
  "VIT_SIZES",
  "ViTDecoder",
  "ViTEncoder",
  "blur_downsample",
  "build_discriminator",
  "build_tokenizer",
  "encoder_last_layer_path",
  "decode_variant",
  "get_last_layer",
  "last_layer_path",
]
