"""`lmtune serve`: a trained model behind HTTP, loaded once.

Classifiers answer `POST /v1/classify`, extractive QA models `POST /v1/answer`, language models
OpenAI's `POST /v1/chat/completions` and `POST /v1/completions` (streaming included). Every model
has `GET /health`, `GET /v1/models` and Prometheus `GET /metrics`.

Layers, top to bottom: server.py (load the model, run uvicorn), app.py (the FastAPI app: limits,
auth, errors, routes), predict_api.py and openai_api.py (the endpoints), batching.py (one model
thread, requests gathered into batches), metrics.py, options.py.
"""

from lmtune.serve.options import ServeOptions

__all__ = ["ServeOptions"]
