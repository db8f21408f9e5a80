"""LlamaIndex adapter: :class:`MultimodalRerankPostprocessor`, a node postprocessor for mixed nodes.

Requires the ``llama-index`` extra: ``pip install "mm-rerank-components[llama-index]"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, ImageNode, MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "MultimodalRerankPostprocessor needs llama-index-core: "
        'pip install "mm-rerank-components[llama-index]"'
    ) from exc

from mm_rerank_components.integrations._common import (
    RESULT_KEYS,
    first_present,
    float_or_none,
    result_metadata,
)
from mm_rerank_components.reranker import Reranker
from mm_rerank_components.types import Candidate, Query, RankedCandidate

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Metadata keys read for an ImageNode's image when its ``image``, ``image_path`` and ``image_url`` are
#: all empty (``file_path`` is what LlamaIndex's SimpleDirectoryReader sets).
DEFAULT_IMAGE_METADATA_KEYS = ("file_path", "image_path", "image_uri")


class MultimodalRerankPostprocessor(BaseNodePostprocessor):
    """Rerank ``TextNode`` and ``ImageNode`` results on one unified relevance scale.

    The query is the bundle's ``query_str`` and/or its ``image_path``. An ``ImageNode`` is read as an
    image (``image`` base64, then ``image_path``, ``image_url``, then ``file_path`` in metadata) with its
    text as caption; a ``TextNode`` as text. Returned nodes are copies carrying the unified score as
    ``NodeWithScore.score`` and in ``metadata["relevance_score"]``, plus ``metadata["modality"]``; the
    input nodes are not modified.

    Example:
        >>> from mm_rerank_components import MultimodalReranker
        >>> from mm_rerank_components.scorers import FakeScorer
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> post = MultimodalRerankPostprocessor(reranker=MultimodalReranker(FakeScorer()), top_n=1)
        >>> nodes = [NodeWithScore(node=TextNode(text="owls"), score=0.9),
        ...          NodeWithScore(node=TextNode(text="a red fox"), score=0.1)]
        >>> [n.node.get_content() for n in post.postprocess_nodes(nodes, query_str="red fox")]
        ['a red fox']
    """

    top_n: int | None = Field(default=None, description="Nodes to return; None returns all, reordered.")
    threshold: float | None = Field(
        default=None, description="Drop nodes whose unified score (0..1) is below this."
    )
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the first-stage score in metadata['retrieval_score']."
    )
    image_metadata_keys: tuple[str, ...] = Field(
        default=DEFAULT_IMAGE_METADATA_KEYS,
        description="Metadata keys read for an ImageNode's image when its image fields are empty.",
    )
    model_name: str = Field(default="", description="Scorer name, reported in rerank events.")
    _reranker: Reranker = PrivateAttr()

    def __init__(
        self,
        reranker: Reranker,
        top_n: int | None = None,
        threshold: float | None = None,
        keep_retrieval_score: bool = False,
        image_metadata_keys: Sequence[str] = DEFAULT_IMAGE_METADATA_KEYS,
        **kwargs: Any,
    ) -> None:
        if not isinstance(reranker, Reranker):
            raise TypeError(
                f"reranker must be a MultimodalReranker (or CascadeReranker), got {type(reranker).__name__}"
            )
        scorer = getattr(reranker, "scorer", None) or getattr(
            getattr(reranker, "expensive", None), "scorer", None
        )
        kwargs.setdefault("model_name", getattr(scorer, "name", type(reranker).__name__))
        super().__init__(
            top_n=top_n,
            threshold=threshold,
            keep_retrieval_score=keep_retrieval_score,
            image_metadata_keys=tuple(image_metadata_keys),
            **kwargs,
        )
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "MultimodalRerankPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        candidates = [self._to_candidate(n, i) for i, n in enumerate(nodes)]
        with self._rerank_events(nodes, query_bundle) as finish:
            ranked = self._reranker.rerank(query, candidates, top_n=self.top_n, threshold=self.threshold)
            return finish(self._to_nodes(nodes, ranked))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        candidates = [self._to_candidate(n, i) for i, n in enumerate(nodes)]
        with self._rerank_events(nodes, query_bundle) as finish:
            ranked = await self._reranker.arerank(
                query, candidates, top_n=self.top_n, threshold=self.threshold
            )
            return finish(self._to_nodes(nodes, ranked))

    @contextmanager
    def _rerank_events(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> Iterator[Callable[[list[NodeWithScore]], list[NodeWithScore]]]:
        """LlamaIndex's ReRank start/end instrumentation events and the legacy callback event."""
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.model_name
            )
        )
        payload: dict[str, Any] = {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.model_name,
            EventPayload.QUERY_STR: query_bundle.query_str if query_bundle else None,
            EventPayload.TOP_K: self.top_n,
        }
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:

            def finish(result: list[NodeWithScore]) -> list[NodeWithScore]:
                event.on_end(payload={EventPayload.NODES: result})
                dispatcher.event(ReRankEndEvent(nodes=result))
                return result

            yield finish

    # -- translation ---------------------------------------------------------------------------------

    @staticmethod
    def _query(query_bundle: QueryBundle | None) -> Query:
        if query_bundle is None:
            raise ValueError(
                "MultimodalRerankPostprocessor needs a query: pass query_bundle=QueryBundle(...) "
                "or query_str=..."
            )
        text = query_bundle.query_str or None
        image = getattr(query_bundle, "image_path", None) or None
        if text is None and image is None:
            raise ValueError("the QueryBundle has an empty query_str and no image_path: give one or both")
        return Query(text=text, image=image)

    def _to_candidate(self, scored: NodeWithScore, position: int) -> Candidate:
        node = scored.node
        text = node.get_content(metadata_mode=MetadataMode.NONE) or None
        image = self._image_of(node)
        if isinstance(node, ImageNode) and image is None:
            raise ValueError(
                f"ImageNode {node.node_id!r} (position {position}) has no image: set image, image_path or "
                f"image_url, or one of the metadata keys {list(self.image_metadata_keys)}"
            )
        metadata = dict(node.metadata)
        return Candidate(
            id=node.node_id,
            text=text,
            image=image,
            metadata=metadata,
            source=metadata.get("source") if isinstance(metadata.get("source"), str) else None,
            retrieval_score=float_or_none(scored.score),
        )

    def _image_of(self, node: BaseNode) -> Any | None:
        if isinstance(node, ImageNode):
            return (
                node.image
                or node.image_path
                or node.image_url
                or first_present(node.metadata, self.image_metadata_keys)
            )
        resource = getattr(node, "image_resource", None)  # llama_index.core.schema.Node (media resources)
        if resource is not None:
            return resource.data or (str(resource.path) if resource.path else None) or resource.url
        return None

    def _to_nodes(self, nodes: list[NodeWithScore], ranked: list[RankedCandidate]) -> list[NodeWithScore]:
        out = []
        for r in ranked:
            original = nodes[r.index]
            node = original.node.model_copy()
            node.metadata = {
                **original.node.metadata,
                **result_metadata(r, original.score, keep_retrieval_score=self.keep_retrieval_score),
            }
            node.excluded_llm_metadata_keys = _with(node.excluded_llm_metadata_keys, RESULT_KEYS)
            node.excluded_embed_metadata_keys = _with(node.excluded_embed_metadata_keys, RESULT_KEYS)
            out.append(NodeWithScore(node=node, score=r.score))
        return out


def _with(keys: list[str], extra: tuple[str, ...]) -> list[str]:
    return [*keys, *(k for k in extra if k not in keys)]
