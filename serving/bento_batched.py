"""Benchmark variant (not the default service): the same /recommend, with the model call moved to a
second BentoML service whose `score` API is `batchable=True`, i.e. BentoML's own adaptive
batching. `bentoml serve seqops.serving.bento_batched:RecommenderSplit` starts both processes.

bench/serve.py runs it next to the in-process micro-batcher of `service.Recommender` to show which
is faster here. It serves only /recommend, and the scorer follows the champion on its own (so
during a promote the two processes can briefly disagree): a measuring device, not a product.
"""

from __future__ import annotations

import gc

import bentoml
import numpy as np
import torch
from starlette.responses import JSONResponse

from seqops.models.release.registry import Registry
from seqops.serving.champion import Champion
from seqops.serving.engine import Engine, RequestError
from seqops.serving.schemas import RecommendRequest, RecommendResponse
from seqops.serving.service import PARAMS, PATHS, error_response, json_response


@bentoml.service(name="seqops-scorer", workers=1, logging={"access": {"enabled": False}})
class Scorer:
    def __init__(self) -> None:
        torch.set_num_threads(PARAMS.serving.torch_threads)
        registry = Registry(PATHS, PARAMS.registry)
        self.champion = Champion.load(registry, registry.champion(), quantized=PARAMS.serving.quantize)
        gc.collect()
        gc.freeze()  # as in service.Recommender: no full-GC stalls over the imported libraries

    @bentoml.api(batchable=True, max_batch_size=PARAMS.serving.max_batch_size, max_latency_ms=1000)
    def score(self, input_ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.champion.model.next_item_scores(torch.from_numpy(input_ids)).numpy()


@bentoml.service(
    name="seqops-recommender-split", workers=PARAMS.serving.workers, logging={"access": {"enabled": False}}
)
class RecommenderSplit:
    scorer = bentoml.depends(Scorer)

    def __init__(self) -> None:
        self.engine = Engine(PATHS, PARAMS)
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.engine.ready()

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        if request.refusal:  # a body that failed validation (serving/schemas.py)
            return JSONResponse(request.refusal.body, status_code=request.refusal.status)
        prepared = self.engine.prepare([request])  # on the event loop, as in service.Recommender
        if isinstance(prepared, RequestError):
            return error_response(prepared)
        champion, queries, personal = prepared
        matrix = None
        if personal:
            ids = np.zeros((len(personal), champion.max_len), dtype=np.int64)  # fixed width: batches concatenate
            for row, q in zip(ids, personal):
                known = q.items[(q.items > 0) & (q.items <= champion.n_items)][-champion.max_len :]
                if len(known):
                    row[-len(known) :] = known
            matrix = await self.scorer.to_async.score(ids)
        result = self.engine.finish(champion, [request], queries, personal, matrix)[0]
        if isinstance(result, RequestError):
            return error_response(result)
        return json_response(result)
