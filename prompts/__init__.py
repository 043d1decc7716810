"""Prompt templates (Jinja2), shipped inside the package as ``llmrec_gen.prompts``.

The default template ids live here (a module with no imports) so that the CLI can show them
in ``--help`` without loading the prompting stack; :mod:`llmrec_gen.llm.prompting` re-exports
them.
"""

DEFAULT_TEMPLATE = "zeroshot-v2"
"""The template ``recommend``, ``evaluate`` and fine-tuning use unless told otherwise."""
EXPLAIN_TEMPLATE = "explain-v2"
"""The template of ``recommend --explain``."""
RATING_TEMPLATE = "rating-v2"
"""The template of the LLM's rating predictions."""
