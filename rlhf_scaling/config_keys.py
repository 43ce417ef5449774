"""Every config key with its type, default and description, for the command line.

    rlhf-scaling-keys                    # all keys
    rlhf-scaling-keys rm_train ppo.kl    # the keys under rm_train, and those starting with ppo.kl
    rlhf-scaling-keys --overrides task=jsonl model@rm=pythia-70m -- task   # defaults as composed with overrides

The descriptions are the field comments of the schema in rlhf_scaling/config.py (the comment at
the end of a field's line, else the comment lines right above it), read from its source with
`tokenize`, so config.py stays the one place they are written. Types are the annotations as
written; defaults are the values the default config composes to (conf/config.yaml: what
`rlhf-scaling` runs with no overrides), which for the model specs differ from the dataclass defaults.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from typing import Dict, List, NamedTuple, Optional, Sequence

from rlhf_scaling import config as schema
from rlhf_scaling.tracking import flatten_config


class Key(NamedTuple):
    """One config key: dotted name, type as annotated, default (composed), description."""

    name: str
    type: str
    default: object
    description: str


def field_comments(module=schema) -> Dict[str, Dict[str, str]]:
    """Class name -> field name -> description, from the comments in the module's source:
    the comment ending the field's line, else the block of comment lines directly above it."""
    source = inspect.getsource(module)
    comments: Dict[int, str] = {}  # line -> comment text
    code_lines = set()  # lines holding code (a comment on such a line ends it)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    out: Dict[str, Dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            text = comments.get(stmt.end_lineno) or comments.get(stmt.lineno)
            if not text:  # a block of whole-line comments right above the field
                above, line = [], stmt.lineno - 1
                while line in comments and line not in code_lines:
                    above.insert(0, comments[line])
                    line -= 1
                text = " ".join(above)
            fields[stmt.target.id] = text
    return out


def _annotation(cls, name: str) -> str:
    """The field's annotation as written in the source (`from __future__ import annotations`
    keeps them as strings)."""
    raw = cls.__annotations__.get(name, "")
    return raw if isinstance(raw, str) else getattr(raw, "__name__", str(raw))


def schema_keys(cls=schema.Config, prefix: str = "", comments: Optional[Dict[str, Dict[str, str]]] = None) -> List[tuple]:
    """(dotted key, annotation, description) of every leaf field under the dataclass `cls`; a field
    that is itself a dataclass is descended into, anything else (dicts of specs included) is a key."""
    comments = field_comments() if comments is None else comments
    hints = typing.get_type_hints(cls, vars(schema))
    out = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += schema_keys(hints[f.name], f"{name}.", comments)
        else:
            out.append((name, _annotation(cls, f.name), comments.get(cls.__name__, {}).get(f.name, "")))
    return out


def _composed_defaults(overrides: Sequence[str]) -> Dict[str, object]:
    """Dotted key -> value of the default config composed with `overrides` (as the CLI would)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rlhf_scaling.cli import CONFIG_PATH

    # Composed, not validated: listing the keys of `task=jsonl` needs no task.path yet.
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    container = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)

    return flatten_config(container, keep=("study.rm_models",))  # the RM sizes: one key, a dict value


def keys(prefixes: Sequence[str] = (), overrides: Sequence[str] = ()) -> List[Key]:
    """The keys named by `prefixes` (all without), in schema order: a full key name gives that key
    (policy.name, not policy.name_or_path too), anything else every key starting with it."""
    defaults = _composed_defaults(overrides)
    everything = schema_keys()
    names = {name for name, _, _ in everything}

    def wanted(name: str) -> bool:
        return not prefixes or any(name == p if p in names else name.startswith(p) for p in prefixes)

    return [Key(name, annotation, defaults.get(name), description)
            for name, annotation, description in everything if wanted(name)]


def _value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(value) + "}" if value else "{}"
    return str(value)


def format_keys(found: List[Key]) -> str:
    """Two lines per key: `name: type = default`, then the description indented."""
    lines = []
    for k in found:
        lines.append(f"{k.name}: {k.type} = {_value(k.default)}")
        lines.append(f"    {k.description or '(no description in rlhf_scaling/config.py)'}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="rlhf-scaling-keys",
        description="Every config key of rlhf-scaling with its type, default and description "
                    "(set any of them on the command line as key=value).")
    parser.add_argument("prefix", nargs="*", help="show only keys starting with these (e.g. rm_train ppo.kl)")
    parser.add_argument("--overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="compose the defaults with these overrides first (e.g. task=jsonl model@rm=pythia-70m)")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException

    try:
        found = keys(args.prefix, args.overrides)
    except (HydraException, schema.ConfigError) as err:  # a bad override: one line, as the CLI says it
        parser.exit(2, f"{parser.prog}: error: {str(err).strip().splitlines()[0]}\n")
    if not found:
        parser.exit(2, f"{parser.prog}: error: no config key starts with {' or '.join(args.prefix)}\n")
    try:
        print(format_keys(found))
    except BrokenPipeError:  # `rlhf-scaling-keys | head`: the reader has what it wanted
        sys.stdout = None


if __name__ == "__main__":
    sys.exit(main())
