"""The bottom layer: what every other layer may use (errors, parameter counting, the kind registry, closed specs)."""
