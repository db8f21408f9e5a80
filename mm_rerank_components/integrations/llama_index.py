"""LlamaIndex: the node translator (:func:`to_node`, :func:`from_node`) and
:class:`MultimodalRerankPostprocessor`, a node postprocessor for mixed text and image nodes.

Requires the ``llama-index`` extra: ``pip install "mm-rerank-components[llama-index]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mm_rerank_components._deps import require

require("llama_index.core", "llama-index", "MultimodalRerankPostprocessor")

from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    BaseNode,
    ImageNode,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
    TextNode,
)

from mm_rerank_components.integrations._common import (  # noqa: E402
    BOOKKEEPING_KEYS,
    IMAGE_PATH_KEY,
    IMAGE_URI_KEY,
    NODE_IMAGE_KEYS,
    PRECOMPUTED_KEY,
    RESULT_KEYS,
    candidate_metadata,
    candidate_source,
    first_present,
    float_or_none,
    image_reference,
    precomputed_from_data,
    result_metadata,
    string_or_none,
    strip_added,
)
from mm_rerank_components.media import classify  # noqa: E402
from mm_rerank_components.reranker import (  # noqa: E402
    CascadeReranker,
    MultimodalReranker,
    Reranker,
    check_limits,
    check_request,
)
from mm_rerank_components.types import Candidate, Query, RankedCandidate  # noqa: E402

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

DEFAULT_IMAGE_METADATA_KEYS = NODE_IMAGE_KEYS


# -- the translator ------------------------------------------------------------------------------------------


def to_node(candidate: Candidate) -> NodeWithScore:
    """A Candidate as a LlamaIndex node: ``ImageNode`` when it has an image, else ``TextNode``.

    The node id is the candidate id, the text the passage or caption, the metadata the candidate's
    metadata plus ``modality``, ``source`` and ``retrieval_score`` (hidden from LLM prompts and
    embeddings with the other bookkeeping keys). An ``ImageNode`` carries a local file in ``image_path``,
    a URI in ``image_url`` and a data URI or base64 picture in ``image`` (with ``image_mimetype``); a
    preview keeps the original picture's ``image_path``/``image_url`` from the metadata. The score is
    ``retrieval_score``. :func:`from_node` turns it back into the same Candidate.

    Example:
        >>> n = to_node(Candidate("p1", text="Foxes live in dens.", retrieval_score=0.5))
        >>> type(n.node).__name__, n.score
        ('TextNode', 0.5)
        >>> from_node(n) == Candidate("p1", text="Foxes live in dens.", retrieval_score=0.5)
        True
    """
    metadata = candidate_metadata(candidate, what="an ImageNode")
    hidden = [k for k in BOOKKEEPING_KEYS if k in metadata]
    image = image_reference(candidate, "an ImageNode")
    if image is None:
        text_node = TextNode(
            id_=candidate.id,
            text=candidate.text or "",
            metadata=metadata,
            excluded_llm_metadata_keys=hidden,
            excluded_embed_metadata_keys=hidden,
        )
        return NodeWithScore(node=text_node, score=candidate.retrieval_score)
    fields: dict[str, Any] = {}
    kind = classify(image)
    if kind in ("data", "base64"):
        header, _, payload = image.partition(",") if kind == "data" else ("", "", image)
        fields["image"] = payload
        fields["image_mimetype"] = header[5:].split(";")[0] or None if header else None
        # a preview: the original picture stays citable
        fields["image_path"] = string_or_none(metadata.get(IMAGE_PATH_KEY))
        fields["image_url"] = None if fields["image_path"] else string_or_none(metadata.get(IMAGE_URI_KEY))
    elif kind == "path":
        fields["image_path"] = image
    else:
        fields["image_url"] = image
    node = ImageNode(
        id_=candidate.id,
        text=candidate.text or "",
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=hidden,
        **fields,
    )
    return NodeWithScore(node=node, score=candidate.retrieval_score)


def from_node(
    scored: NodeWithScore, position: int = 0, *, image_keys: tuple[str, ...] = NODE_IMAGE_KEYS
) -> Candidate:
    """A LlamaIndex node as a Candidate.

    An ``ImageNode``'s picture is its ``image`` (base64; a data URI again when ``image_mimetype`` is set),
    then ``image_path``, ``image_url``, then the metadata ``image_keys``; its text is the caption. A node
    with an ``image_resource`` (``llama_index.core.schema.Node``) is read the same way. Keys that
    :func:`to_node` added are removed from the metadata; ``position`` names the node in errors.

    Example:
        >>> from_node(NodeWithScore(node=TextNode(id_="t", text="owls"), score=0.2)).retrieval_score
        0.2
    """
    if not isinstance(scored, NodeWithScore):
        raise TypeError(
            f"nodes[{position}] is a {type(scored).__name__}, not a NodeWithScore; pass "
            "NodeWithScore(node=..., score=...)"
        )
    node = scored.node
    image = _image_of(node, image_keys)
    if isinstance(node, ImageNode) and image is None:
        raise ValueError(
            f"ImageNode {node.node_id!r} (position {position}) has no image: set image, image_path or "
            f"image_url, or one of the metadata keys {list(image_keys)}"
        )
    metadata = dict(node.metadata)
    signals = metadata.get(PRECOMPUTED_KEY)
    where = f"node {node.node_id!r} metadata"
    return Candidate(
        id=node.node_id,
        text=node.get_content(metadata_mode=MetadataMode.NONE) or None,
        image=image,
        metadata=strip_added(metadata),
        source=candidate_source(metadata),
        retrieval_score=float_or_none(scored.score),
        precomputed={} if signals is None else precomputed_from_data(signals, where),
    )


def _model_name(reranker: Reranker) -> str:
    """The scorer's name for rerank events (the expensive stage's in a cascade)."""
    if isinstance(reranker, CascadeReranker):
        reranker = reranker.expensive
    if isinstance(reranker, MultimodalReranker):
        return reranker.scorer.name
    # the learned-fusion and default rerankers score with their base reranker's scorer
    name = getattr(getattr(reranker, "scorer", None), "name", None)
    return name if isinstance(name, str) else type(reranker).__name__


def _image_of(node: BaseNode, image_keys: tuple[str, ...]) -> Any | None:
    if isinstance(node, ImageNode):
        if node.image:
            return f"data:{node.image_mimetype};base64,{node.image}" if node.image_mimetype else node.image
        return node.image_path or node.image_url or first_present(node.metadata, image_keys)
    resource = getattr(node, "image_resource", None)  # llama_index.core.schema.Node (media resources)
    if resource is not None:
        return resource.data or (str(resource.path) if resource.path else None) or resource.url
    return None


# -- the adapter --------------------------------------------------------------------------------


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

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, value: Any) -> Any:
        check_limits(top_n=value)
        return value

    @field_validator("threshold", mode="before")
    @classmethod
    def _check_threshold(cls, value: Any) -> Any:
        check_limits(threshold=value)
        return value

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
        kwargs.setdefault("model_name", _model_name(reranker))
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

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], **kwargs: Any) -> MultimodalRerankPostprocessor:
        """A postprocessor around a saved reranker folder (see :func:`mm_rerank_components.load_reranker`).

        ``kwargs`` are the postprocessor's settings (``top_n``, ``threshold``, ...).

        Example:
            >>> post = MultimodalRerankPostprocessor.from_folder("my-reranker", top_n=5)  # doctest: +SKIP
        """
        from mm_rerank_components.adapt.folder import load_reranker

        return cls(reranker=load_reranker(folder), **kwargs)

    @property
    def reranker(self) -> Reranker:
        """The reranker this postprocessor calls."""
        return self._reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        candidates = self._candidates(nodes)
        with self._rerank_events(nodes, query_bundle) as finish:
            ranked = self._reranker.rerank(query, candidates, top_n=self.top_n, threshold=self.threshold)
            return finish(self._to_nodes(nodes, ranked))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._query(query_bundle)
        if not nodes:
            return []
        candidates = self._candidates(nodes)
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

    def _query(self, query_bundle: QueryBundle | None) -> Query:
        if query_bundle is None:
            raise ValueError(
                "MultimodalRerankPostprocessor needs a query: pass query_bundle=QueryBundle(...) "
                "or query_str=..."
            )
        text = query_bundle.query_str or None
        image = getattr(query_bundle, "image_path", None) or None
        if text is None and image is None:
            raise ValueError("the QueryBundle has an empty query_str and no image_path: give one or both")
        return check_request(Query(text=text, image=image), self.top_n, self.threshold)

    def _candidates(self, nodes: Sequence[NodeWithScore]) -> list[Candidate]:
        return [from_node(n, i, image_keys=self.image_metadata_keys) for i, n in enumerate(nodes)]

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
