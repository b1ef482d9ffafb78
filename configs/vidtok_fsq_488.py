"""VidTok causal 4x8x8 FSQ preset (2^18 codes), 17 frames of 256 px; ``:noncausal``, the non-causal one, 16 frames.

Run (a folder of videos; VidTok trains on 17-frame clips sampled at 3 fps, 16-frame ones when non-causal):
  python train.py --config=configs/vidtok_fsq_488.py --workdir=runs/vidtok_fsq_488 \
    --config.video.source=folder --config.video.path=/path/to/videos --config.loss.lpips_weights=lpips.npz
  python train.py --config=configs/vidtok_fsq_488.py:noncausal ...   # configs/vidtok_fsq_noncausal_488_262144.yaml

Reference: Tang et al., "VidTok: A Versatile and Open-Source Video Tokenizer",
2024 (arXiv:2412.13061; microsoft/VidTok configs/vidtok_fsq_causal_488_262144.yaml):
the ``vidtok`` CNN family (vqtok/models/cnn.py: (2+1)-D residual blocks, a 2-D
block per frame then a 1-D causal block per pixel, LayerNorms, time halved by
an average/causal-conv mix at levels 1 and 2 and doubled by a repeat/causal-conv
mix in the decoder, the video padded in front by 3 copies of its first frame),
ch 128, ch_mult 1-2-4-4, 2 res blocks, attention in the middle, 6 latent
channels = 6 FSQ channels of 8 levels (lucidrains' bound, ``bound="wide"``).
17 frames make 5 latent frames of 32x32 tokens at 256 px.
Parameters: 157,451,661 (encoder 69,230,472, decoder 88,221,189; FSQ has none),
equal to the reference's EncoderCausal3DPadding + DecoderCausal3DPadding built
from the YAML (tests/test_pretrained_vidtok.py). ``python -m vqtok.convert
vidtok vidtok_fsq_causal_488_262144.ckpt tok/`` gives this architecture with the
published weights. Set ``quantizer.levels`` to [8, 8, 8, 8, 8] (2^15) or
[8, 8, 8, 8] (2^12) for the other two 4x8x8 files.

``:noncausal``: model_3dnoncausal.py's model (``model.causal=False``: every time conv padded by a zero
frame on each side, the time downsampling by one after the clip, no frames padded or dropped), 16 frames
make 4 latent frames; the same 157,451,661 parameters, equal to the reference's Encoder3D + Decoder3D
(tests/test_pretrained_vidtok.py); ``python -m vqtok.convert vidtok vidtok_fsq_noncausal_488_262144.ckpt``
gives it with the published weights. Its YAML trains as the causal one's (the same losses and rates).

The FSQ losses are the reference's: FSQRegularizer's entropy loss (weight 0.1,
annealed from 0.3 over the first 2,000 steps, γ 1, inverse temperature 100) and
commitment loss (0.25), added with weight 1 as its ``aux_loss``
(``quantizer.entropy_weight`` ...; vqtok/quantizers/fsq.py, at parity with
regularizers.py: tests/test_quantizers_fsq_vidtok.py). Not the reference's: the rest of its loss
(GeneralLPIPSWithDiscriminator: L1 + LPIPS 1.0, a learned log-variance, a 2-D
discriminator from step 20,001 with weight 0.2 and LeCam 0.005) is approximated by
vqtok's L1 + LPIPS + GAN terms below.
"""

from vqtok.pretrained.vidtok import preset


def get_config(arg: str = ""):
  if arg not in ("", "noncausal"):
    raise ValueError(f"configs/vidtok_fsq_488.py takes no argument or 'noncausal'; got {arg!r}")
  causal = arg != "noncausal"
  c = preset((1, 2, 4, 4), channels=128, num_res_blocks=2, levels=(8,) * 6, causal=causal)
  # configs/vidtok_fsq_causal_488_262144.yaml regularizer_config (diversity_gamma and inv_temperature: defaults).
  c.quantizer.update(entropy_weight=0.1, entropy_anneal_steps=2000, entropy_anneal_factor=3.0, commitment_weight=0.25)
  c.video.update(num_frames=17 if causal else 16, fps=3.0)  # VidTok's training clips: 17 (16) frames at 3 fps
  c.loss.update(l1_weight=1.0, l2_weight=0.0, perceptual_weight=1.0, gan_weight=0.2, disc_start=20_001)
  c.loss.lecam_weight = 0.005
  c.optimizer.update(lr=1e-5, disc_lr=1e-5)
  c.training.batch_size = 2
  return c
