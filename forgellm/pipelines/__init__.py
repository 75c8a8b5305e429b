"""Multi-stage pipelines: `forge pipeline cpt-ift` (continued pre-training, then instruction tuning)."""
