"""Checks of a Hydra command line before Hydra runs it, for the mistakes Hydra answers with a
raw exception or with a message that does not say what would be valid:

- a config group given a value that is not a name (`encoding=5`, `task=null`): Hydra raises a
  ValueError with its traceback; a list (`encoding=[rope,alibi]`) merges both configs, which
  then fail on each other's keys;
- an unknown key of a section (`model.dmodel=32`): Hydra says "Key 'dmodel' is not in struct"
  and suggests `+model.dmodel=32`, without the valid keys;
- a run or sweep folder that is an existing file: Hydra's FileExistsError; or empty
  (`hydra.run.dir=`, an unset variable in a script): a run into the current directory.

`check_overrides` also names the folders Hydra is about to create for the run, so that a
command refused later removes what Hydra made, and only that.

Each raises a `ConfigError` naming the value and what would be valid. The arguments are read
one at a time with Hydra's own override parser, and the sections' keys from the config Hydra
would compose; what the parser cannot read (flags such as -m, a malformed override) is left
to Hydra, as is any override of a group swept with -m.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, OverrideType
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from posenc_jax.errors import ConfigError

# Hydra's settings that name the folder a run or a sweep writes into.
RUN_FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def check_overrides(config_dir: str, config_name: str, argv: Sequence[str]) -> list[Path]:
    """Raise ConfigError for the first override in `argv` that Hydra would mishandle (above);
    else return the folders Hydra will make for the run (`_folders_to_make`). One composition
    of the config serves both."""
    overrides = list(_overrides_in(argv))
    for override in overrides:
        _check_run_folder(override)
        _check_group_choice(Path(config_dir), override)
    # The config as the group choices, Hydra's own settings and the top-level keys make it:
    # the sections' keys, and the run folder (named from the groups and hydra.*, or from a
    # top-level key such as posenc-inspect's out_dir). Section keys stay out, since an unknown
    # one would fail the composition itself (an unknown top-level key is Hydra's to report).
    groups = [o for o in overrides if _is_group_choice(Path(config_dir), o)]
    hydra_settings = [o for o in overrides if o.key_or_group.startswith("hydra.")]
    top_level = [o for o in overrides if "." not in o.key_or_group and o not in groups]
    chosen = [
        str(o.input_line) for o in groups + hydra_settings + top_level if not o.is_sweep_override()
    ]
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            config = compose(config_name=config_name, overrides=chosen, return_hydra_config=True)
    except HydraException:  # a bad group choice: Hydra's own message lists the choices
        return []
    swept = {o.key_or_group for o in groups if o.is_sweep_override()}
    _check_section_keys(config, overrides, swept)
    sweep = any(arg in ("-m", "--multirun") for arg in argv)
    return _folders_to_make(config, "hydra.sweep.dir" if sweep else "hydra.run.dir")


def _overrides_in(argv: Sequence[str]) -> Iterator[Override]:
    parser = OverridesParser.create()
    for arg in argv:
        with contextlib.suppress(OverrideParseException):
            yield from parser.parse_overrides([arg])


def _values(override: Override) -> list:
    value = override.value()
    if isinstance(value, Glob):
        return list(value.include)  # name patterns, which Hydra expands against the group
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


def _check_run_folder(override: Override) -> None:
    if override.key_or_group not in RUN_FOLDER_KEYS or override.is_sweep_override():
        return
    path = override.value()
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ConfigError(
            f"{override.key_or_group}= is empty, which would put the run in the current "
            f"directory; give a folder ({override.key_or_group}=outputs/my_run), or leave it out "
            f"for the default."
        )
    if not isinstance(path, str):
        return
    key = override.key_or_group
    try:
        # The folder, or the nearest part of its path that exists, must be a folder.
        existing = Path(path).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usable = existing.is_dir()
    except OSError as error:  # a name too long for the file system, a path it refuses
        raise ConfigError(
            f"{key}={path} cannot be a folder here ({error.strerror}); choose another path."
        ) from error
    if not usable:
        raise ConfigError(
            f"{key}={path} is a file, or lies under one ({existing}), not a folder, so no run "
            f"can be written there; choose a folder that does not exist yet (or an unfinished "
            f"run's, to resume it)."
        )


def _folders_to_make(config: DictConfig, key: str) -> list[Path]:
    """The folders that do not exist yet on the path of the run folder (`key`: Hydra's run or
    sweep dir), outermost first: what Hydra will create for the run. Empty if the path cannot
    be resolved here (Hydra will say why)."""
    try:
        path = Path(str(OmegaConf.select(config, key))).absolute()
    except Exception:  # any failure here is Hydra's to report, with its own message
        return []
    # Hydra makes each component of the path as written: a/new/../b makes a/new, and b if
    # it is missing. "." and ".." make nothing; a prefix is looked up with them collapsed.
    missing, prefix = [], Path(path.anchor)
    for part in path.parts[1:]:
        prefix = prefix / part
        folder = Path(os.path.normpath(prefix))
        if part not in (".", "..") and not folder.exists() and folder not in missing:
            missing.append(folder)
    return missing


def _is_group_choice(config_dir: Path, override: Override) -> bool:
    return (
        not override.is_delete()
        and override.package is None
        and (config_dir / override.key_or_group).is_dir()
    )


def _check_group_choice(config_dir: Path, override: Override) -> None:
    if not _is_group_choice(config_dir, override):
        return
    if all(isinstance(value, str) for value in _values(override)):
        return
    group = override.key_or_group
    choices = sorted(path.stem for path in (config_dir / group).glob("*.yaml"))
    raise ConfigError(
        f"{override.input_line} does not name one config of group {group!r}; choose one by "
        f"name ({group}=<name>) from {choices}. To compare several, sweep them with -m "
        f"({group}={','.join(choices[:2])})."
    )


def _check_section_keys(config: DictConfig, overrides: list[Override], swept: set[str]) -> None:
    """An override of `section.key` (no + prefix) whose section in `config` has no such key;
    sections of a group swept with -m (`swept`) are left to Hydra."""
    for override in overrides:
        section, _, key = override.key_or_group.partition(".")
        if (
            override.type != OverrideType.CHANGE
            or override.key_or_group.count(".") != 1
            or section == "hydra"
            or section in swept
        ):
            continue
        node = config.get(section)
        if isinstance(node, DictConfig) and key not in node:
            raise ConfigError(
                f"Unknown key(s) [{key!r}] in section {section!r} ({override.input_line}); "
                f"valid keys are {[str(name) for name in node]}."
            )
