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

from lmtune.errors import InputError
from lmtune.serve.errors import ApiError
from lmtune.serve.served import Served, split_back
from lmtune.tasks.base import RecordPredictor, input_records


def add_predict_routes(app: FastAPI, served: Served, endpoint: str) -> None:
    predictor = served.predictor
    assert isinstance(predictor, RecordPredictor)
    fields: list[str] = list(predictor.input_fields)
    limit = served.options.max_batch_size
    lists: dict[str, Any] = {f"{f}s": (list[StrictStr], Field(min_length=1, description=f"one {f} per input")) for f in fields}
    body_model: Any = create_model(f"{endpoint.title()}Request", __config__=ConfigDict(extra="forbid"),
                                   model=(str | None, None), **lists)

    async def predict(body: body_model) -> dict[str, Any]:
        served.check_model(getattr(body, "model"))
        records = _records({name: getattr(body, f"{name}s") for name in fields}, limit)
        predictions = await served.call("predict", tuple(fields), len(records), records)
        return {"model": served.name, "predictions": predictions}

    def run(payloads: list[list[dict[str, str]]], should_stop: Callable[[], bool]) -> list[Any]:
        records = [r for p in payloads for r in p]
        # Sorted by length into forward passes: on a CPU, 16 short texts padded alike beat 32 padded to the longest.
        predictions = predictor.predict_records(records, batch_size=served.options.forward_batch_size)
        return split_back(predictions, [len(p) for p in payloads])

    served.runners["predict"] = run
    app.post(f"/v1/{endpoint}", summary=f"{endpoint} with the served model")(predict)


def _records(inputs: dict[str, list[str]], limit: int) -> list[dict[str, str]]:
    """The i-th entry of every list together, after the checks training makes on its data (as `lmtune predict` makes)."""
    for field, values in inputs.items():
        if len(values) > limit:
            raise ApiError(400, f"{field}s holds {len(values)} entries; this server takes at most {limit} per request "
                           f"(--max-batch-size)", param=f"{field}s", code="too_many_inputs")
    try:
        return input_records(inputs, lambda field: f"{field}s", lambda field, i: f"{field}s[{i}]")
    except InputError as err:
        raise ApiError(400, str(err), param=err.param) from None
