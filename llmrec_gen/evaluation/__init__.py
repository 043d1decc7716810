"""Evaluation: honest metrics, the runner that applies them to every method, and reports.

::

    from llmrec_gen.config import load_yaml_model
    from llmrec_gen.evaluation import EvalConfig, run_evaluation
    cfg = load_yaml_model(EvalConfig, "ml100k-baselines")
    result = run_evaluation(cfg)          # writes runs/ml100k-baselines/{report.md, ...}

``metrics`` (formulas), ``config`` (what to run), ``runner`` (fit, recommend, checkpoint),
``scoring`` (per-user lists -> numbers), ``results`` (records and run-directory files) and
``report`` (Markdown/CSV/JSON/PNG).
"""

from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.results import EvalResult, MethodResult
from llmrec_gen.evaluation.runner import run_evaluation

__all__ = ["EvalConfig", "EvalResult", "MethodResult", "run_evaluation"]
