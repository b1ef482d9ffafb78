"""vqtok.data: image and video sources and transforms (re-exported here), and the grain input pipeline
(``vqtok.data.pipeline``, imported on its own: the config schema and tokenizer loading need
the sources' fields without grain)."""

from vqtok.data.sources import SOURCES as SOURCES
from vqtok.data.sources import ImageFolderSource as ImageFolderSource
from vqtok.data.sources import ImageSource as ImageSource
from vqtok.data.sources import SampleSource as SampleSource
from vqtok.data.sources import TfdsSource as TfdsSource
from vqtok.data.sources import decode_image as decode_image
from vqtok.data.sources import make_source as make_source
from vqtok.data.sources import tfds_prepare_command as tfds_prepare_command
from vqtok.data.sources import tfds_spec as tfds_spec
from vqtok.data.sources import to_rgb as to_rgb
from vqtok.data.transforms import center_crop as center_crop
from vqtok.data.transforms import random_resized_crop as random_resized_crop
from vqtok.data.transforms import resize as resize
from vqtok.data.transforms import sample_crop_box as sample_crop_box
from vqtok.data.transforms import to_float as to_float
from vqtok.data.video import VideoFolderSource as VideoFolderSource
from vqtok.data.video import VideoSampleSource as VideoSampleSource
from vqtok.data.video import VideoSource as VideoSource
from vqtok.data.video import read_clip as read_clip
