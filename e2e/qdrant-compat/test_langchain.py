"""LangChain's Qdrant integration (langchain-qdrant) against `vecshard-server dev`, unchanged:
add documents, similarity search with and without a metadata filter, MMR, get by id, delete.
A deterministic fake embedding stands in for a model (nothing is downloaded).

Run by e2e/qdrant-compat.sh: VECSHARD_LC_URL points at a router serving `lc` (16 dimensions,
cosine, indexed: metadata.source keyword); with VECSHARD_LC_GRPC_PORT set, the client talks
gRPC. The script runs it once per transport; the documents are deleted at the end.
"""

import os
import unittest

import httpx
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models

URL = os.environ.get("VECSHARD_LC_URL", "http://127.0.0.1:6433")
GRPC_PORT = os.environ.get("VECSHARD_LC_GRPC_PORT")
COLLECTION = "lc"

TEXTS = [
    ("vecshard shards vectors across pods", "docs"),
    ("the operator reconciles VectorCollections", "docs"),
    ("snapshots go to S3-compatible stores", "ops"),
    ("replicas catch up before they serve reads", "ops"),
    ("HNSW graphs answer nearest-neighbour queries", "papers"),
    ("payload filters narrow a search", "docs"),
]


class LangChainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.embedding = DeterministicFakeEmbedding(size=16)
        if GRPC_PORT:
            cls.client = QdrantClient(url=URL, grpc_port=int(GRPC_PORT), prefer_grpc=True, timeout=30)
        else:
            cls.client = QdrantClient(url=URL, timeout=30)
        # Constructing the store validates the collection's vector size and distance.
        cls.store = QdrantVectorStore(client=cls.client, collection_name=COLLECTION, embedding=cls.embedding)
        cls.ids = cls.store.add_texts([t for t, _ in TEXTS], metadatas=[{"source": s} for _, s in TEXTS])

    @classmethod
    def tearDownClass(cls):
        cls.store.delete(cls.ids)

    def test_similarity_search_finds_the_document_of_the_same_text(self):
        for text, source in TEXTS:
            docs = self.store.similarity_search(text, k=2)
            self.assertEqual(docs[0].page_content, text)
            self.assertEqual(docs[0].metadata["source"], source)
            self.assertIn("_id", docs[0].metadata)

    def test_scores_match_vecshards_own_search(self):
        text = TEXTS[1][0]
        with_scores = self.store.similarity_search_with_score(text, k=3)
        mine = httpx.post(f"{URL}/collections/{COLLECTION}/points/search",
                          json={"vector": self.embedding.embed_query(text), "limit": 3, "exact": True,
                                "with_payload": True}).json()["result"]
        self.assertEqual([d.page_content for d, _ in with_scores], [h["payload"]["page_content"] for h in mine])
        for (_, score), hit in zip(with_scores, mine):
            self.assertAlmostEqual(score, hit["score"], places=4)

    def test_metadata_filter(self):
        flt = models.Filter(must=[models.FieldCondition(key="metadata.source", match=models.MatchValue(value="ops"))])
        docs = self.store.similarity_search(TEXTS[0][0], k=5, filter=flt)
        self.assertEqual(sorted(d.page_content for d in docs), sorted(t for t, s in TEXTS if s == "ops"))

    def test_mmr_get_by_ids_and_delete(self):
        docs = self.store.max_marginal_relevance_search(TEXTS[2][0], k=2, fetch_k=6)
        self.assertEqual(len(docs), 2)
        self.assertEqual(docs[0].page_content, TEXTS[2][0])
        extra = self.store.add_documents([Document(page_content="to be deleted", metadata={"source": "tmp"})])
        self.assertEqual([d.page_content for d in self.store.get_by_ids(extra)], ["to be deleted"])
        self.assertTrue(self.store.delete(ids=extra))
        self.assertEqual(self.store.get_by_ids(extra), [])
        self.assertEqual(self.client.count(COLLECTION, exact=True).count, len(TEXTS))

    def test_from_texts_into_the_existing_collection(self):
        store = QdrantVectorStore.from_texts(
            ["one more text"], self.embedding, url=URL, collection_name=COLLECTION,
            metadatas=[{"source": "from_texts"}],
            **({"prefer_grpc": True, "grpc_port": int(GRPC_PORT)} if GRPC_PORT else {}),
        )
        self.assertEqual(store.similarity_search("one more text", k=1)[0].page_content, "one more text")
        store.delete(ids=[d.metadata["_id"] for d in store.similarity_search("one more text", k=1)])


if __name__ == "__main__":
    unittest.main(verbosity=2)
