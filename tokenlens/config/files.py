"""The configuration file: where it is, reading it (`load_settings`) and rewriting one section of it
(`write_section`, used by the config API and the CLI), atomically, keeping every other line byte for byte."""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.representer import RoundTripRepresenter

from tokenlens.config.model import SECTIONS, Settings
from tokenlens.config.validation import (
    _SECTION_CHECKS,
    ConfigError,
    _check_section,
    _section_data,
    _show,
    parse_settings,
    section_to_dict,
)

# --- files and environment ---------------------------------------------------------------------------


def tokenlens_home() -> Path:
    """The data directory: `$TOKENLENS_HOME`, default `~/.tokenlens`."""
    value = os.environ.get("TOKENLENS_HOME")
    return Path(value).expanduser() if value else Path.home() / ".tokenlens"


def config_path() -> Path:
    """The configuration file: `$TOKENLENS_CONFIG`, default `$TOKENLENS_HOME/config.yaml`."""
    value = os.environ.get("TOKENLENS_CONFIG")
    return Path(value).expanduser() if value else tokenlens_home() / "config.yaml"


def _safe_yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def _yaml_error(exc: YAMLError) -> ConfigError:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            err = ConfigError(f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}")
            err.line = mark.line + 1
            return err
        return ConfigError(f"invalid YAML: {problem}")
    return ConfigError(f"invalid YAML: {exc}")


def _load_yaml(text: str) -> Any:
    try:
        return _safe_yaml().load(text)
    except YAMLError as exc:
        raise _yaml_error(exc) from None


def _locate(text: str, field_path: str | None) -> int | None:
    """The 1-based line of a dotted field path in a YAML text, as far as it can be followed."""
    if not field_path:
        return None
    try:
        node: Any = YAML().load(text)
    except YAMLError:
        return None
    line: int | None = None
    rest = field_path
    try:
        while rest:
            if rest.startswith("["):
                end = rest.index("]")
                index = int(rest[1:end])
                if not isinstance(node, CommentedSeq) or index >= len(node):
                    break
                line = node.lc.item(index)[0]
                node, rest = node[index], rest[end + 1 :].removeprefix(".")
                continue
            if not isinstance(node, CommentedMap):
                break
            keys = [
                k for k in node if isinstance(k, str) and (rest == k or rest.startswith((k + ".", k + "[")))
            ]
            if not keys:
                break
            key = max(keys, key=len)
            line = node.lc.key(key)[0]
            node, rest = node[key], rest[len(key) :].removeprefix(".")
    except (AttributeError, ValueError, TypeError, KeyError, IndexError):
        pass
    return None if line is None else line + 1


def _read_text(path: Path) -> str | None:
    """The file's text, or None when there is no file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate the configuration file (default `config_path()`).

    No file, an empty file or one with only comments: the defaults. A relative `server.upstream_ca` is
    taken relative to the file's directory. Raises ConfigError (with `.line` and `.path` set).
    """
    path = config_path() if path is None else Path(path)
    text = _read_text(path)
    if text is None:
        return Settings()
    try:
        data = _load_yaml(text)
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(
                f"the file must be a mapping of sections (server, budgets, ...), got {_show(data)}"
            )
        settings = parse_settings(data)
    except ConfigError as exc:
        exc.path = path
        if exc.line is None:
            exc.line = _locate(text, exc.field)
        raise
    ca = settings.server.upstream_ca
    if ca is not None:
        ca_path = Path(ca).expanduser()
        if not ca_path.is_absolute():
            ca_path = path.parent / ca_path
        settings = dataclasses.replace(
            settings, server=dataclasses.replace(settings.server, upstream_ca=str(ca_path))
        )
    return settings


class _Representer(RoundTripRepresenter):
    """Writes None as `null` (ruamel's round-trip default is an empty value)."""


_Representer.add_representer(
    type(None), lambda rep, _data: rep.represent_scalar("tag:yaml.org,2002:null", "null")
)


def _writer_yaml() -> YAML:
    yaml = YAML()
    yaml.Representer = _Representer
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _styled(value: Any, in_list: bool = False) -> Any:
    """Plain data -> ruamel nodes: lists of scalars and small list items in flow style, the rest block."""
    if isinstance(value, Mapping):
        node = CommentedMap((key, _styled(item)) for key, item in value.items())
        if in_list and all(
            _is_scalar(v) or (isinstance(v, list) and all(map(_is_scalar, v))) for v in value.values()
        ):
            node.fa.set_flow_style()
        return node
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_styled(item, in_list=True) for item in value)
        if all(map(_is_scalar, value)):
            seq.fa.set_flow_style()
        return seq
    return value


def _dump(data: Any) -> str:
    stream = io.StringIO()
    _writer_yaml().dump(data, stream)
    return stream.getvalue()


def _is_trailer(line: str) -> bool:
    """A line after a section's content that belongs to what follows: blank, comment at column 0, `...`."""
    stripped = line.strip()
    return not stripped or line.startswith("#") or stripped == "..."


def _splice(text: str, name: str, value: Any) -> str:
    """`text` with the top-level key `name` set to `value`, every other line kept byte for byte."""
    doc = YAML().load(text)
    block = _dump({name: _styled(value)})
    if doc is None:
        return text + ("\n" if text and not text.endswith("\n") else "") + block
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"the file must be a mapping of sections (server, budgets, ...), got {_show(doc)}")
    keys = list(doc)
    if doc.fa.flow_style() or any(doc.lc.key(k)[1] != 0 for k in keys):
        # A flow-style or indented top level: let ruamel rewrite the whole document (comments kept).
        doc[name] = value
        return _dump(doc)
    lines = text.splitlines(keepends=True)
    if name not in doc:
        # A new section goes before the first existing one that follows it in the documented order (and before the
        # comments just above that one), else at the end.
        later = [k for k in keys if k in SECTIONS and SECTIONS.index(k) > SECTIONS.index(name)]
        if later:
            at = doc.lc.key(later[0])[0]
            if later[0] != keys[0]:
                while at > 0 and _is_trailer(lines[at - 1]) and lines[at - 1].strip() != "...":
                    at -= 1
            return "".join(lines[:at]) + block + "".join(lines[at:])
        end = len(lines)
        while end > 0 and lines[end - 1].strip() == "...":
            end -= 1
        head = "".join(lines[:end])
        if head and not head.endswith("\n"):
            head += "\n"
        return head + block + "".join(lines[end:])
    index = keys.index(name)
    start = doc.lc.key(name)[0]
    end = doc.lc.key(keys[index + 1])[0] if index + 1 < len(keys) else len(lines)
    keep_from = end
    while keep_from > start + 1 and _is_trailer(lines[keep_from - 1]):
        keep_from -= 1
    return "".join(lines[:start]) + block + "".join(lines[keep_from:])


_WRITE_LOCK = threading.Lock()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None  # a new file keeps mkstemp's 0600: it may hold an api_token or webhook secrets
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_section(path: Path, name: str, data: Any) -> None:
    """Rewrite only section `name` of the YAML file at `path` (created when absent), atomically.

    The result is validated as a whole before anything is written (ConfigError otherwise, file untouched).
    The section is written in its full, normalised form; every other line of the file (comments
    included) is kept byte for byte. A symlinked file is written through to its target.
    """
    _check_section(name, SECTIONS)
    with _WRITE_LOCK:
        target = Path(os.path.realpath(path))
        text = _read_text(target) or ""
        try:
            current = parse_settings(_load_yaml(text) or {}) if text.strip() else Settings()
        except ConfigError:
            current = Settings()  # another section is invalid: reported by the check below
        data = _section_data(name, data)
        value = section_to_dict(
            dataclasses.replace(current, **{name: _SECTION_CHECKS[name](data, name)}), name
        )
        try:
            new_text = _splice(text, name, value)
        except YAMLError as exc:
            raise _yaml_error(exc) from None
        written = _load_yaml(new_text)
        try:
            result = parse_settings(written)
        except ConfigError as exc:
            exc.path, exc.line = target, _locate(new_text, exc.field)
            raise
        if section_to_dict(result, name) != value:
            raise ConfigError(f"could not write section {name} into {target}", name)
        _atomic_write(target, new_text)
