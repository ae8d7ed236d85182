"""params.yaml: read with a safe loader that refuses duplicate keys, validated as a whole (the
stages, the actgrad command and the MLflow model read it so)."""

import re
from pathlib import Path

import yaml

from .config import ParamsError, load_params


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping, and reads 1e-3 as a
    number, as DVC's YAML 1.2 does (PyYAML's YAML 1.1 needs a dot: 1.0e-3)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_values(path="params.yaml"):
    """params.yaml as plain YAML values, unvalidated."""
    try:
        return yaml.load(Path(path).read_text(), Loader=UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: cannot read it ({e})") from None
    except yaml.MarkedYAMLError as e:
        raise ParamsError(f"{path}: line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: {' '.join(str(e).split())}") from None


def read_params(path="params.yaml"):
    """params.yaml, validated as a whole."""
    return load_params(read_values(path))
