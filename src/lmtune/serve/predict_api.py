"""`POST /v1/classify` (classifiers) and `POST /v1/answer` (extractive QA): what `lmtune predict` gives, over HTTP.

The body holds one list per input of the model (`texts`, and `text_pairs` for a model trained on
pairs; `questions` and `contexts`), up to --max-batch-size entries. Concurrent requests are
gathered into one forward pass; each gets back its own predictions, in its order.
"""

# No `from __future__ import annotations`: FastAPI reads the request model from the handler's annotation.

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import ConfigDict, Field, StrictStr, create_model

from lmtune.serve.errors import ApiError
from lmtune.serve.served import Served, split_back


def add_predict_routes(app: FastAPI, served: Served, endpoint: str) -> None:
    fields: list[str] = list(served.predictor.input_fields)
    limit = served.options.max_batch_size
    lists: dict[str, Any] = {f"{f}s": (list[StrictStr], Field(min_length=1, description=f"one {f} per input")) for f in fields}
    body_model: Any = create_model(f"{endpoint.title()}Request", __config__=ConfigDict(extra="forbid"),
                                   model=(str | None, None), **lists)

    async def predict(body: body_model) -> dict[str, Any]:
        served.check_model(getattr(body, "model"))
        records = _records({name: getattr(body, name) for name in lists}, limit)
        predictions = await served.call("predict", tuple(fields), len(records), records)
        return {"model": served.name, "predictions": predictions}

    def run(payloads: list[list[dict[str, str]]], should_stop: Callable[[], bool]) -> list[Any]:
        records = [r for p in payloads for r in p]
        # Sorted by length into forward passes: on a CPU, 16 short texts padded alike beat 32 padded to the longest.
        predictions = served.predictor.predict_records(records, batch_size=served.options.forward_batch_size)
        return split_back(predictions, [len(p) for p in payloads])

    served.runners["predict"] = run
    app.post(f"/v1/{endpoint}", summary=f"{endpoint} with the served model")(predict)


def _records(lists: dict[str, list[str]], limit: int) -> list[dict[str, str]]:
    """The i-th entry of every list together, after the checks training makes on its data."""
    counts = {name: len(values) for name, values in lists.items()}
    for name, n in counts.items():
        if n > limit:
            raise ApiError(400, f"{name} holds {n} entries; this server takes at most {limit} per request (--max-batch-size)",
                           param=name, code="too_many_inputs")
    if len(set(counts.values())) > 1:
        raise ApiError(400, "give every list the same number of entries: " + ", ".join(f"{k} has {v}" for k, v in counts.items()),
                       param=next(iter(counts)))
    for name, values in lists.items():
        empty = [i for i, v in enumerate(values) if not v.strip()]
        if empty:
            raise ApiError(400, f"{name}[{empty[0]}] is empty or only spaces; lmtune does not predict for empty inputs",
                           param=f"{name}[{empty[0]}]")
    n = next(iter(counts.values()))
    return [{name[:-1]: values[i] for name, values in lists.items()} for i in range(n)]
