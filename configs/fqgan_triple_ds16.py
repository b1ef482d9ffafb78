"""FQGAN-Triple ds16 preset: LlamaGen's VQ-16 CNN with three factorised sub-codebooks and two teachers.

Run (the two teachers are files the user converts once):
  python -m vqtok.convert dinov2 dinov2_vits14_pretrain.pth teachers/dinov2_s14/
  python -m vqtok.convert clip ViT-B-16.pt teachers/clip_b16/
  python train.py --config=configs/fqgan_triple_ds16.py --workdir=runs/fqgan_triple_ds16 \
    --config.data.source=tfds --config.data.name=imagenet2012 --config.loss.lpips_weights=lpips.npz \
    --config.feature_teachers="('teachers/dinov2_s14', 'teachers/clip_b16')" --config.loss.semantic_weight=0.5

Reference: Bai et al., "Factorized Visual Tokenization and Generation", 2024
(arXiv:2411.16681); showlab/FQGAN tokenizer/vq_model_triple.py ``VQ_16``: Dual's
LlamaGen trunk and per-sub-codebook adapters (``configs/fqgan_dual_ds16.py``) for
three sub-codebooks in the order the decoder concatenates them (l.254): pixel,
mid-level semantic, high-level semantic, each 16384 l2-normalised codes of 8;
``post_quant_conv`` 24 -> 256. Two feature-prediction heads (3 blocks, l.208-209):
the mid-level one 384 wide (DINOv2 ViT-S/14's width), the high-level one 768
(CLIP ViT-B/16's). Parameters: 159,295,515 (= the reference's;
tests/test_pretrained_fqgan.py and tests/test_recipes.py).

Recipe: train_fqgan_triple.sh is train_fqgan_dual.sh's (vq_train_triple.py, LlamaGen's
trainer: --lr 2e-4, --global-batch-size 256, 40 epochs, --entropy-loss-ratio 0.03,
--disentanglement-ratio 0.1, --semantic-weight 0.5), so every recipe value is Dual's.
The disentanglement term averages the three pairs (vq_model_triple.py:248-250, as
``Factorized`` does). Its semantic loss (vq_loss.py ``VQLoss_triple_codebook``) is
two InfoNCE terms, each weighted 0.5 (``loss.semantic_weight`` per head): the
mid-level head's class token against a frozen DINOv2 ViT-S/14's
(facebook/dinov2-small, ``last_hidden_state[:, 0]``, tokenizer/models/dino_encoder.py)
and the high-level head's against a frozen CLIP ViT-B/16's
(openai/clip-vit-base-patch16, before ``post_layernorm``, clip_encoder.py); both
resize the batch to 224 by nearest (``loss.vf_resize``) and take each GPU's 32
images as negatives (``loss.semantic_group``). ``config.feature_teachers`` names
the two teacher directories in the heads' order; it needs the files, so it is set
by hand as above.

Not expressed: resize-and-crop augmentation, bf16 autocast (as Dual); the teachers'
weights are Hugging Face's transformers copies in the reference, the torch hub /
OpenAI files here (the same published weights).
"""

from configs import fqgan_dual_ds16


def get_config():
  c = fqgan_dual_ds16.get_config()
  c.model.update(code_dim=24, factorized_heads=3, feature_head_dims=(384, 768))  # pixel, mid, high: 3 x 8
  c.quantizer.num_groups = 3
  return c
