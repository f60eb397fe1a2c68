"""Read the desired state: meshctl.toml and YAML documents, from a directory or a git revision.

Every input error is a SourceError naming the file (relative to the root), line and field path.
"""

from meshctl.source.config import parse_config
from meshctl.source.desired import DesiredState, load_desired
from meshctl.source.yamlines import YamlDoc, load_documents

__all__ = ["DesiredState", "YamlDoc", "load_desired", "load_documents", "parse_config"]
