"""``python -m llmrec_gen``: the same CLI as the ``llmrec-gen`` command."""

from llmrec_gen.cli import app

app(prog_name="llmrec-gen")
