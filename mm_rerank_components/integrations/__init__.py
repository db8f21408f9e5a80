"""Framework adapters: the only package that imports LlamaIndex or LangChain. Import the module you use;
each imports its framework on import.

* :mod:`mm_rerank_components.integrations.llama_index`: the node translator (``to_node``/``from_node``)
  and ``MultimodalRerankPostprocessor``;
* :mod:`mm_rerank_components.integrations.langchain`: the Document translator
  (``to_document``/``from_document``) and ``MultimodalRerankCompressor``;
* :mod:`mm_rerank_components.integrations.llama_index_retriever` and
  :mod:`mm_rerank_components.integrations.langchain_retriever`: the Chroma retriever's framework faces;
* :mod:`mm_rerank_components.integrations._common`: the one key schema both translators share.

Example:
    >>> from mm_rerank_components.integrations.langchain import to_document  # doctest: +SKIP
"""
