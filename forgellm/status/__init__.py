"""`forge status`: a project's health at a glance, from cheap reads of the files each stage writes."""

from forgellm.status.report import project_status

__all__ = ["project_status"]
