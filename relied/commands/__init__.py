"""CLI verbs of the higher layers (experts, training), registered in ``relied.cli``."""
