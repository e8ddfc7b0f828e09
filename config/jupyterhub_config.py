# JupyterHub reads this file (`mlrp up` passes it with -f). All settings come from the one MLRP
# YAML named by $MLRP_CONFIG (or the embedded default); edit that, not this.
# ruff: noqa: F821  (`c` is injected by traitlets)
from config.loading import load_for_hub

load_for_hub(c)  # type: ignore[name-defined]  # noqa: F821
