"""Synthetic expansion of small data sets (`forge expand`): shape, filters, the expander."""
