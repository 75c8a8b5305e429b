"""Planning: goal + data profile + hardware + advisor -> a validated plan (forge.yaml)."""

from forgellm.planning.planner import PlanOverrides, make_plan
from forgellm.planning.report import PlanResult

__all__ = ["PlanOverrides", "PlanResult", "make_plan"]
