"""MAIE's HTTP API: the previous MAIE's routes over `maie.submit` and `maie.Job` (`maie api`).

app.py      the application and /health                 models.py   request and response bodies
jobs.py     submit, status, cancel routes               catalog.py  templates and models routes
openapi.py  error answers, key and example the document declares
compat.py   the previous contract (features, statuses, template ids) onto MAIE's jobs
auth.py     X-API-Key       limits.py   the request body limit       errors.py   error answers
server.py   `maie api`: key and address checks, uvicorn
"""
