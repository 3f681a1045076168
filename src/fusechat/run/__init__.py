"""Orchestration of a whole fusion run: the recipe, the plan of steps and the run directory's layout, the
pipeline that runs the steps, their status, and the run's report. Stage packages never import from here."""
