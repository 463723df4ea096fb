"""A realistic synthetic card-transaction generator with labelled fraud patterns."""

from services.generator.patterns import PATTERNS
from services.generator.stream import GeneratorConfig, Labelled, generate, start_ending_now

__all__ = ["PATTERNS", "GeneratorConfig", "Labelled", "generate", "start_ending_now"]
