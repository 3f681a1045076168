"""Orchestration of a whole fusion run: the recipe, the plan of steps and the run directory's layout, the
pipeline that runs the steps, their status, and the run's report. Stage packages never import from here."""

# `fusechat.run(...)` calls fusechat.run.api.run: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.run.api", "run")
