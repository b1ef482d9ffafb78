"""What the training-step golden scripts share (gen_train_*.py): random LPIPS weights, stubs, recording.

The reference trainers' LPIPS modules build torchvision's VGG16 with ImageNet
weights and download lpips's heads; offline, ``install_stubs`` builds VGG16's
``features`` with ``vgg_weights`` instead, and each script points its
reference's checkpoint lookup at a file of ``lin_weights``. Both come from
``np.random.RandomState`` (a frozen stream) in draws.py, which
tests/step_parity.py imports too. ``record`` stores a tensor dict the way the tests read it.
``randomise_discriminator`` gives a PatchGAN (the NLayerDiscriminator that
taming wrote and LlamaGen and SEED-Voken copied) weights far from its
initialisation, so a layout mistake shows. ``install_lightning_stubs`` stands
in for pytorch_lightning where a reference's model is a LightningModule.
"""

import importlib.machinery
import os
import sys
import types

import numpy as np
import torch
from draws import FULL, lin_weights, random_weights, sketch_matrix, vgg_weights  # noqa: F401  (the scripts take them from here)

VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def randomise_discriminator(disc, seed):
  """Random conv and BatchNorm parameters of a PatchGAN (not its initial values, so a layout mistake shows)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in disc.modules():
      if isinstance(m, torch.nn.Conv2d):
        fan_in = m.weight[0].numel()
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) / np.sqrt(fan_in))
        if m.bias is not None:
          m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))


# ----------------------------------------------------------------------------- stubs
def stub(name, **attrs):
  """An empty module ``name`` with ``attrs``, registered in sys.modules."""
  m = types.ModuleType(name)
  m.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch._dynamo looks modules up by spec
  m.__dict__.update(attrs)
  sys.modules[name] = m
  return m


def install_stubs(vgg_sd):
  def vgg16(pretrained=False, **_):
    layers, cin = [], 3
    for c in VGG_CFG:
      if c == "M":
        layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [torch.nn.Conv2d(cin, c, kernel_size=3, padding=1), torch.nn.ReLU(inplace=True)]
        cin = c
    net = types.SimpleNamespace(features=torch.nn.Sequential(*layers))
    net.features.load_state_dict({k[len("features.") :]: torch.from_numpy(v) for k, v in vgg_sd.items()})
    return net

  stub("torchvision", models=types.SimpleNamespace(vgg16=vgg16))
  stub("requests")
  stub("tqdm", tqdm=None)


def install_lightning_stubs():
  """A ``pytorch_lightning`` module with what the references import, and the classes their checkpoints pickle.

  ``LightningModule`` is a plain ``nn.Module`` whose ``log`` and ``log_dict``
  keep the last values in ``logged`` (the scripts read the reference's own
  loss terms from there) and whose ``global_step`` the script sets, as
  Lightning's loop does before each batch. The loop itself (which optimizer
  steps when, ``requires_grad`` toggling, ``zero_grad``) is each script's.
  """
  names = ("", ".callbacks", ".callbacks.model_checkpoint", ".trainer", ".utilities", ".utilities.parsing")
  mods = {n: types.ModuleType("pytorch_lightning" + n) for n in names}
  for n, m in mods.items():
    m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
    if n:
      parent, _, leaf = n.rpartition(".")
      setattr(mods[parent], leaf, m)
  pl, cb, pa = mods[""], mods[".callbacks"], mods[".utilities.parsing"]

  class LightningModule(torch.nn.Module):
    global_step = 0

    def log(self, name, value, **_):
      self.logged[name] = value.detach().clone() if torch.is_tensor(value) else value

    def log_dict(self, values, **_):
      for k, v in values.items():
        self.log(k, v)

  LightningModule.logged = {}
  placeholder = lambda name: type(name, (), {})
  model_checkpoint = placeholder("ModelCheckpoint")  # Lightning 1.0 checkpoints pickle its class
  model_checkpoint.__module__ = mods[".callbacks.model_checkpoint"].__name__
  mods[".callbacks.model_checkpoint"].ModelCheckpoint = cb.ModelCheckpoint = model_checkpoint

  class AttributeDict(dict):  # LightningModule.hparams
    def __getattr__(self, k):
      try:
        return self[k]
      except KeyError:
        raise AttributeError(k) from None

  AttributeDict.__module__ = pa.__name__
  pa.AttributeDict = AttributeDict
  pl.__version__ = "1.0.8"
  pl.LightningModule, pl.LightningDataModule = LightningModule, placeholder("LightningDataModule")
  pl.seed_everything = lambda seed: None
  cb.Callback, cb.LearningRateMonitor = placeholder("Callback"), placeholder("LearningRateMonitor")
  mods[".trainer"].Trainer = placeholder("Trainer")
  mods[".utilities"].rank_zero_only = lambda f: f
  sys.modules.update({m.__name__: m for m in mods.values()})
  return LightningModule


# ----------------------------------------------------------------------------- recording
def record(out, prefix, tensors, *, whole):
  """For the tensors, in order: sketches, norms, the global norm and (``whole``) the small ones, concatenated."""
  sketches, norms, full = [], [], []
  for name, t in tensors.items():
    x = t.detach().double().numpy().reshape(-1)
    sketches.append(sketch_matrix(name, x.size) @ x)
    norms.append(np.linalg.norm(x))
    if x.size <= FULL:
      full.append(t.detach().numpy().astype(np.float32).reshape(-1))
  out[f"{prefix}/sketch"] = np.stack(sketches).astype(np.float32)
  out[f"{prefix}/norm"] = np.array(norms)
  if whole:
    out[f"{prefix}/full"] = np.concatenate(full)
  out[f"{prefix}/global_norm"] = np.float64(np.linalg.norm(norms))


def save_golden(out_dir, gold):
  """Writes ``gold`` as ``out_dir/golden.npz`` and says how much the directory holds."""
  np.savez_compressed(os.path.join(out_dir, "golden.npz"), **gold)
  size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
  print(f"wrote {out_dir}: {len(gold)} arrays, {size / 1e3:.0f} kB in all")
