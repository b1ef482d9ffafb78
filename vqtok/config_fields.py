"""The config fields a module owns: their defaults and checks, declared next to the registry they configure.

A module that reads a config section (the data pipeline, the tokenizer, the
quantizer registry, the discriminator, the losses) declares the fields it reads
as a ``ConfigFields`` table; ``vqtok.config`` assembles the tables into
``default_config()`` and applies their checks in ``validate_config``. So a new
quantizer type, CNN family or data source is registered in its own module and
the config accepts it. This module imports nothing of vqtok: every layer may
declare fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class ConfigFields:
  """Fields of one config section that one module reads.

  Attributes:
    section: the config section, e.g. ``"data"``; several modules may share one.
    defaults: field name -> default, in the order they appear in the config.
    choices: field name -> the values it may take (a registry's names).
    non_negative: fields that must be >= 0.
    positive: fields that must be > 0.
    files: fields naming a file that must exist when set (checked with ``check_paths``).
    check: ``check(config, check_paths)`` raises ValueError naming the field of
      a value the tables above cannot express; it reads the whole config (after
      the choices and ranges of every section are checked), and with
      ``check_paths`` also the files and folders the fields name.
    open: the section is the keyword arguments of a class chosen by its ``type``,
      so fields beyond ``defaults`` are allowed (the class checks them).
  """

  section: str
  defaults: Mapping[str, Any]
  choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  non_negative: tuple[str, ...] = ()
  positive: tuple[str, ...] = ()
  files: tuple[str, ...] = ()
  check: Callable[[Any, bool], None] | None = None
  open: bool = False
