"""Cosmos DV4x8x8 preset: NVIDIA's causal video tokenizer, 4x8x8 compression, FSQ with 64,000 codes.

Run (on video clips; without ``video.source`` it trains on images as one-frame videos):
  python train.py --config=configs/cosmos_dv488.py --workdir=runs/cosmos_dv488 \
    --config.video.source=folder --config.video.path=/path/to/clips

Reference: Agarwal et al., "Cosmos World Foundation Model Platform for Physical AI", 2025
(arXiv:2501.03575), NVIDIA/Cosmos-Tokenizer cosmos_tokenizer/networks/configs.py ``discrete_video``
with temporal_compression 4 and spatial_compression 8, as Cosmos-0.1-Tokenizer-DV4x8x8 is published:
the ``cosmos`` CNN family (3-D Haar wavelet patching 4, factorised causal (2+1)-D convs padded in time
with copies of the first frame, GroupNorms of one group per frame, hybrid conv + pooling resampling,
attention in space then causally in time in the middle), channels 128, channels_mult 2-4-4, 2 res
blocks, z 16, a 1x1x1 quant_conv to 6 channels, FSQ levels 8-8-8-5-5-5 with the reference's bound
(``bound="wide"``). Level 0 halves space (x Haar's 4 = 8), no level halves time (Haar's 4 alone); 1 + 4k
frames make 1 + k latent frames of (H/8, W/8) tokens; [-1, 1].
Parameters (tests/test_pretrained_cosmos.py): 112,472,182 (encoder with quant_conv 46,324,102, decoder
with post_quant_conv 66,148,080; FSQ has none), equal to the reference's CausalDiscreteVideoTokenizer
(scripts/parity/gen_cosmos.py builds it). DV8x8x8: ``temporal_downsample=(2, 1)``; DV8x16x16: also
``spatial_downsample=(2, 2)`` (the same parameter count).

``--config=configs/cosmos_dv488.py:lowres`` is Cosmos 1.0's DV4x8x8-LowRes (NVIDIA/Cosmos
cosmos1/models/tokenizer/networks/configs.py ``discrete_video_4x8x8_lowres``): Haar patching 2, z 256, both
levels halving space and level 0 time (``spatial_downsample=(2, 2)``, ``temporal_downsample=(2, 1)``), and
1.0's layers (the ``cosmos1`` family: a resampling holds only the convs it uses). Parameters
112,619,766 (encoder with quant_conv 46,647,302, decoder with post_quant_conv 65,972,464), equal to the
reference's (scripts/parity/gen_cosmos1.py builds it).

NVIDIA publish weights, not a training recipe: the losses and schedule here are vqtok's defaults.
Start from the published weights with ``python -m vqtok.convert cosmos Cosmos-0.1-Tokenizer-DV4x8x8/ tok/``
(``Cosmos-1.0-Tokenizer-DV4x8x8-LowRes/`` for ``:lowres``).
"""

from vqtok.config import cnn_config


def get_config(arg: str | None = None):
  c = cnn_config(
    cnn_family="cosmos",
    channels=128,
    channel_mult=(2, 4, 4),
    num_res_blocks=2,
    attention=True,
    norm_groups=1,
    z_channels=16,
    code_dim=6,
    temporal_downsample=(1, 1),
    spatial_downsample=(2, 1),
    wavelet_patch=4,
    time_padding="replicate",
    quantizer={"type": "fsq", "levels": [8, 8, 8, 5, 5, 5], "bound": "wide"},
    discriminator={},
    image_size=256,
  )
  c.video.num_frames = 17  # the reference's temporal_window (video_lib.py)
  if arg == "lowres":
    c.model.update(
      cnn_family="cosmos1", z_channels=256, wavelet_patch=2, spatial_downsample=(2, 2), temporal_downsample=(2, 1)
    )
  elif arg:
    raise ValueError(f"configs/cosmos_dv488.py takes no argument or 'lowres'; got {arg!r}")
  return c
