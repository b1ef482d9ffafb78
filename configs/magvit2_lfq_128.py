"""Open-MAGVIT2 preset, 128px: f8 CNN with lookup-free quantization, 2^18 codes.

Run:
  python train.py --config=configs/magvit2_lfq_128.py --workdir=runs/magvit2_lfq_128 \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz

Reference: Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to
Visual Generation", 2023 (arXiv:2310.05737), image tokenizer, as replicated by
Open-MAGVIT2 (Luo et al., 2024, arXiv:2409.04410; TencentARC/SEED-Voken
configs/Open-MAGVIT2/gpu/imagenet_lfqgan_128_L.yaml): the ``magvit2`` CNN
family (bias-free res blocks, no attention, adaptive GroupNorm conditioned on
the quantized latent at each decoder level, depth-to-space upsampling),
ch 128, ch_mult 1-2-2-4, 4 res blocks, 18 latent channels = 18 LFQ bits read
least-significant first (the reference's token ids), commitment 0.25, entropy
weight 0.1 at temperature 0.01. 16x16 = 256 tokens at 128px.
Parameters (tests/test_models.py): 112,021,653 (encoder 48,422,162, decoder
63,599,491; LFQ has none), equal to the reference's Encoder + Decoder.

Recipe: configs/magvit2_lfq.py's (``recipe``) with this yaml's 350 epochs and
LeCam weight 0.01 (its lr drops, after epochs 250 and 300, have no vqtok field).
"""

from configs import magvit2_lfq


def get_config():
  c = magvit2_lfq.get_config()  # the 256 px model, one level fewer
  c.image_size = 128
  c.model.channel_mult = (1, 2, 2, 4)
  return magvit2_lfq.recipe(c, epochs=350, lecam_weight=0.01)
