"""Framework adapters. Import the one you use; each imports its framework on import.

* :mod:`mm_rerank_components.integrations.llama_index`: ``MultimodalRerankPostprocessor``
* :mod:`mm_rerank_components.integrations.langchain`: ``MultimodalRerankCompressor``
"""
