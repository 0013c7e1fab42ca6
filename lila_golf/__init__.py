"""lila_golf: Parameter-Golf-style language modelling toolkit."""
