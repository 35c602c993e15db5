"""Korean retrieval: Kiwi sentence chunking, BM25 over morphemes, optional dense vectors, fused ranking."""
