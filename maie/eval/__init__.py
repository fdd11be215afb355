"""Quality evaluation: score enhanced text and summaries against human references.

`metrics` holds the pure metric functions (no Celery, no I/O) and defines them; `data` reads the
JSONL items; `runner` sends them through the real pipeline (`eval_enhance`, `eval_summary`) into
the report rows of `models`; `report` writes a report (`write_report`): the `markdown` page, the
`chart` next to it and a JSON file. The `maie eval` commands are in `maie.cli.eval`.
"""
