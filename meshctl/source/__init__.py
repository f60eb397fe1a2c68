"""Read the desired state: meshctl.toml and YAML documents, from a directory or a git revision.

Every input error is a SourceError naming the file (relative to the root), line and field path.
"""

from typing import TYPE_CHECKING

from meshctl.lazyexports import lazy_exports

if TYPE_CHECKING:
    from meshctl.source.config import parse_config
    from meshctl.source.desired import DesiredState, load_desired
    from meshctl.source.yamlines import YamlDoc, load_documents

# name -> its module, imported when first used (a command that reads one policy file needs
# neither meshctl.toml's models nor git)
_WHERE = {"parse_config": "config", "DesiredState": "desired", "load_desired": "desired",
          "YamlDoc": "yamlines", "load_documents": "yamlines"}


__getattr__ = lazy_exports(__name__, _WHERE)

__all__ = ["DesiredState", "YamlDoc", "load_desired", "load_documents", "parse_config"]
