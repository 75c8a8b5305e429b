"""The advisor: proposes recipes, plans, fixes and scripts; deterministic code checks every answer."""
