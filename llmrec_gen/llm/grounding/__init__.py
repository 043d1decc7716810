"""Grounding: turning generated text into catalogue item IDs, with per-user statistics.

``parse`` (text -> titles), ``normalize`` (titles -> match keys), ``match`` (keys -> item IDs:
exact -> fuzzy -> embedding) and ``stats`` (what happened to every title).
"""

from llmrec_gen.llm.grounding.match import GroundedTitle, Grounder, GroundingConfig
from llmrec_gen.llm.grounding.normalize import display_title, normalize_title
from llmrec_gen.llm.grounding.parse import parse_list
from llmrec_gen.llm.grounding.stats import GroundingStats

__all__ = [
    "GroundedTitle",
    "Grounder",
    "GroundingConfig",
    "GroundingStats",
    "display_title",
    "normalize_title",
    "parse_list",
]
