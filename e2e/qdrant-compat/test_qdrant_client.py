"""The official qdrant-client against `vecshard-server dev`, over REST and (with
VECSHARD_GRPC_PORT set) over gRPC: every operation the compatibility table in docs/api.md lists
as working, compared with vecshard's own API where there is an answer to compare (exact
searches, counts).

Run by e2e/qdrant-compat.sh, which starts the server: VECSHARD_URL points at its router and
the collection is `compat` (8 dimensions, cosine, indexed: city keyword, n integer). The
script runs this file once per transport against the same collection; every test leaves the
collection as it found it.
"""

import json
import math
import os
import random
import unittest
import uuid

import grpc
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

URL = os.environ.get("VECSHARD_URL", "http://127.0.0.1:6333")
GRPC_PORT = os.environ.get("VECSHARD_GRPC_PORT")
# What a refused request raises: an error answer (REST) or an error status (gRPC).
ERRORS = (UnexpectedResponse, grpc.RpcError)
COLLECTION = "compat"
DIM = 8
CITIES = ["paris", "lima", "oslo", "kyoto"]


def vector(i: int) -> list[float]:
    rng = random.Random(i)
    return [rng.uniform(-1, 1) for _ in range(DIM)]


def normalized(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def error_of(e: Exception) -> str:
    """The message of an error answer or status (where Qdrant's clients read it)."""
    if isinstance(e, grpc.RpcError):
        return e.details()
    return json.loads(e.content)["status"]["error"]


def connect() -> QdrantClient:
    if GRPC_PORT:
        return QdrantClient(url=URL, grpc_port=int(GRPC_PORT), prefer_grpc=True, timeout=30)
    return QdrantClient(url=URL, timeout=30)


def native(path: str, body: dict) -> dict:
    """vecshard's own API (the same router), for answers to compare with."""
    r = httpx.post(f"{URL}/collections/{COLLECTION}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()["result"]


class QdrantClientTest(unittest.TestCase):
    client: QdrantClient

    @classmethod
    def setUpClass(cls):
        cls.client = connect()
        points = [
            models.PointStruct(
                id=i, vector=vector(i), payload={"city": CITIES[i % 4], "n": i, "text": f"doc {i}"}
            )
            for i in range(300)
        ]
        result = cls.client.upsert(COLLECTION, points=points, wait=True)
        assert result.status == models.UpdateStatus.COMPLETED, result

    def test_01_collection_exists_and_describes_itself(self):
        self.assertTrue(self.client.collection_exists(COLLECTION))
        self.assertFalse(self.client.collection_exists("missing"))
        info = self.client.get_collection(COLLECTION)
        self.assertEqual(info.config.params.vectors.size, DIM)
        self.assertEqual(info.config.params.vectors.distance, models.Distance.COSINE)
        self.assertGreaterEqual(info.points_count, 300)
        self.assertIn("city", info.payload_schema)
        names = [c.name for c in self.client.get_collections().collections]
        self.assertEqual(names, [COLLECTION])

    def test_02_create_if_missing_is_ok_and_a_different_collection_says_how(self):
        self.assertTrue(
            self.client.create_collection(
                COLLECTION, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
            )
        )
        with self.assertRaises(ERRORS) as e:
            self.client.create_collection(
                COLLECTION, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
            )
        self.assertIn("VectorCollection", error_of(e.exception))
        with self.assertRaises(ERRORS):
            self.client.delete_collection(COLLECTION)
        self.assertTrue(self.client.collection_exists(COLLECTION), "nothing was deleted")

    def test_03_retrieve_returns_payloads_and_vectors(self):
        got = self.client.retrieve(COLLECTION, ids=[3, 7, 10_000], with_vectors=True)
        self.assertEqual(sorted(p.id for p in got), [3, 7])
        by_id = {p.id: p for p in got}
        self.assertEqual(by_id[7].payload, {"city": "kyoto", "n": 7, "text": "doc 7"})
        for a, b in zip(by_id[3].vector, normalized(vector(3))):
            self.assertAlmostEqual(a, b, places=5)
        only_city = self.client.retrieve(COLLECTION, ids=[5], with_payload=["city"])
        self.assertEqual(only_city[0].payload, {"city": "lima"})

    def test_04_query_points_equals_the_native_exact_search(self):
        for i in [0, 41, 299]:
            q = vector(i)
            hits = self.client.query_points(
                COLLECTION, query=q, limit=10, search_params=models.SearchParams(exact=True)
            ).points
            self.assertEqual(hits[0].id, i)
            self.assertAlmostEqual(hits[0].score, 1.0, places=4)
            mine = native("/points/search", {"vector": q, "limit": 10, "exact": True})
            self.assertEqual([h.id for h in hits], [h["id"] for h in mine])
        # A query unlike any stored vector, through the graph, with payloads.
        q = [0.3] * DIM
        hits = self.client.query_points(COLLECTION, query=q, limit=5, with_payload=True).points
        self.assertEqual(len(hits), 5)
        self.assertTrue(all("city" in h.payload for h in hits))
        self.assertTrue(all(a.score >= b.score for a, b in zip(hits, hits[1:])))

    def test_05_query_with_filter_offset_and_threshold(self):
        flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="paris"))])
        hits = self.client.query_points(
            COLLECTION, query=vector(2), query_filter=flt, limit=20, with_payload=True,
            search_params=models.SearchParams(exact=True),
        ).points
        self.assertEqual(len(hits), 20)
        self.assertTrue(all(h.payload["city"] == "paris" for h in hits))
        mine = native("/points/search", {"vector": vector(2), "limit": 20, "exact": True,
                                         "filter": {"must": [{"key": "city", "match": {"value": "paris"}}]}})
        self.assertEqual([h.id for h in hits], [h["id"] for h in mine])
        page2 = self.client.query_points(
            COLLECTION, query=vector(2), query_filter=flt, limit=5, offset=5,
            search_params=models.SearchParams(exact=True),
        ).points
        self.assertEqual([h.id for h in page2], [h.id for h in hits[5:10]])
        above = self.client.query_points(
            COLLECTION, query=vector(2), limit=50, score_threshold=0.5,
            search_params=models.SearchParams(exact=True),
        ).points
        self.assertTrue(all(h.score >= 0.5 for h in above))
        rng = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10, lt=20))])
        ids = {h.id for h in self.client.query_points(COLLECTION, query=vector(1), query_filter=rng, limit=50).points}
        self.assertEqual(ids, set(range(10, 20)))

    def test_06_query_by_point_id_leaves_the_point_out(self):
        hits = self.client.query_points(COLLECTION, query=12, limit=5,
                                        search_params=models.SearchParams(exact=True)).points
        self.assertEqual(len(hits), 5)
        self.assertNotIn(12, [h.id for h in hits])
        by_vector = self.client.query_points(COLLECTION, query=vector(12), limit=6,
                                             search_params=models.SearchParams(exact=True)).points
        self.assertEqual([h.id for h in hits], [h.id for h in by_vector][1:])

    def test_07_query_batch(self):
        answers = self.client.query_batch_points(
            COLLECTION,
            requests=[
                models.QueryRequest(query=vector(1), limit=3),
                models.QueryRequest(query=vector(2), limit=4, filter=models.Filter(
                    must=[models.FieldCondition(key="city", match=models.MatchValue(value="oslo"))])),
            ],
        )
        self.assertEqual([len(a.points) for a in answers], [3, 4])
        self.assertEqual(answers[0].points[0].id, 1)

    def test_08_scroll_pages_in_id_order_and_count_agrees(self):
        flt = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchAny(any=["lima", "kyoto"]))])
        seen, offset = [], None
        while True:
            points, offset = self.client.scroll(COLLECTION, scroll_filter=flt, limit=33, offset=offset)
            seen.extend(p.id for p in points)
            if offset is None:
                break
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(set(seen), {i for i in range(300) if i % 4 in (1, 3)})
        self.assertEqual(self.client.count(COLLECTION, count_filter=flt, exact=True).count, len(seen))
        self.assertEqual(native("/points/count", {"filter": flt.model_dump(exclude_none=True)})["count"], len(seen))

    def test_09_payload_updates(self):
        self.client.upsert(COLLECTION, points=[models.PointStruct(id=1000 + i, vector=vector(1000 + i),
                                                                  payload={"city": "paris", "n": i, "tag": "x"})
                                               for i in range(5)], wait=True)
        self.client.set_payload(COLLECTION, payload={"tag": "y", "extra": 1}, points=[1000, 1001], wait=True)
        self.client.overwrite_payload(COLLECTION, payload={"city": "lima"}, points=[1002], wait=True)
        self.client.delete_payload(COLLECTION, keys=["tag"], points=[1003], wait=True)
        self.client.clear_payload(COLLECTION, points_selector=models.PointIdsList(points=[1004]), wait=True)
        got = {p.id: p.payload for p in self.client.retrieve(COLLECTION, ids=list(range(1000, 1005)))}
        self.assertEqual(got[1000], {"city": "paris", "n": 0, "tag": "y", "extra": 1})
        self.assertEqual(got[1002], {"city": "lima"})
        self.assertEqual(got[1003], {"city": "paris", "n": 3})
        self.assertEqual(got[1004], {})
        # By filter: every point whose n is 1000..1001 has no payload key "extra" set yet.
        self.client.set_payload(COLLECTION, payload={"flag": True}, points=models.Filter(
            must=[models.FieldCondition(key="n", range=models.Range(gte=1, lte=1))]), wait=True)
        flagged = [p for p in self.client.retrieve(COLLECTION, ids=[1, 1001]) if p.payload.get("flag")]
        self.assertEqual(sorted(p.id for p in flagged), [1, 1001])
        # The vector is kept.
        v = self.client.retrieve(COLLECTION, ids=[1000], with_vectors=True)[0].vector
        for a, b in zip(v, normalized(vector(1000))):
            self.assertAlmostEqual(a, b, places=5)
        self.client.delete(COLLECTION, points_selector=models.PointIdsList(points=list(range(1000, 1005))), wait=True)

    def test_10_delete_by_ids_and_by_filter(self):
        self.client.upsert(COLLECTION, points=[models.PointStruct(id=2000 + i, vector=vector(2000 + i),
                                                                  payload={"city": "nowhere", "n": 2000 + i})
                                               for i in range(10)], wait=True)
        nowhere = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="nowhere"))])
        self.assertEqual(self.client.count(COLLECTION, count_filter=nowhere).count, 10)
        self.client.delete(COLLECTION, points_selector=[2000, 2001], wait=True)
        self.assertEqual(self.client.count(COLLECTION, count_filter=nowhere).count, 8)
        self.client.delete(COLLECTION, points_selector=models.FilterSelector(filter=nowhere), wait=True)
        self.assertEqual(self.client.count(COLLECTION, count_filter=nowhere).count, 0)

    def test_11_uuid_ids_round_trip(self):
        ids = [str(uuid.uuid4()) for _ in range(3)]
        self.client.upsert(COLLECTION, points=[models.PointStruct(id=u, vector=vector(3000 + i), payload={"city": "uuid"})
                                               for i, u in enumerate(ids)], wait=True)
        got = self.client.retrieve(COLLECTION, ids=ids)
        self.assertEqual(sorted(str(p.id) for p in got), sorted(ids))
        hit = self.client.query_points(COLLECTION, query=vector(3001), limit=1).points[0]
        self.assertEqual(hit.id, ids[1])
        self.client.delete(COLLECTION, points_selector=ids, wait=True)
        self.assertEqual(self.client.retrieve(COLLECTION, ids=ids), [])

    def test_12_payload_indexes_are_the_declared_ones(self):
        r = self.client.create_payload_index(COLLECTION, field_name="city",
                                             field_schema=models.PayloadSchemaType.KEYWORD, wait=True)
        self.assertEqual(r.status, models.UpdateStatus.COMPLETED)
        with self.assertRaises(ERRORS) as e:
            self.client.create_payload_index(COLLECTION, field_name="text", field_schema=models.PayloadSchemaType.KEYWORD)
        self.assertIn("spec.indexedFields", error_of(e.exception))

    def test_13_bad_input_and_unsupported_features_are_named(self):
        with self.assertRaises(ERRORS) as e:
            self.client.upsert(COLLECTION, points=[models.PointStruct(id=1, vector=[0.1] * 3)])
        self.assertIn("dimension", error_of(e.exception))
        self.assertEqual(self.client.retrieve(COLLECTION, ids=[1])[0].payload["n"], 1, "nothing changed")
        with self.assertRaises(ERRORS) as e:
            self.client.query_points(COLLECTION, query=models.RecommendQuery(
                recommend=models.RecommendInput(positive=[1])))
        self.assertIn("query.recommend is not supported", error_of(e.exception))
        with self.assertRaises(ERRORS) as e:
            self.client.query_points(COLLECTION, query=vector(1), using="image")
        self.assertIn("named vector", error_of(e.exception))
        with self.assertRaises(ERRORS) as e:
            self.client.query_points(COLLECTION, query=vector(1), query_filter=models.Filter(
                must=[models.FieldCondition(key="text", match=models.MatchValue(value="doc 1"))]))
        self.assertIn("not indexed", error_of(e.exception))
        r = httpx.post(f"{URL}/collections/{COLLECTION}/points/recommend", json={"positive": [1]})
        self.assertEqual(r.status_code, 400)
        self.assertIn("recommend is not supported", r.json()["status"]["error"])

    def test_14_legacy_search_endpoints(self):
        r = httpx.post(f"{URL}/collections/{COLLECTION}/points/search",
                       json={"vector": vector(9), "limit": 3, "with_payload": ["city"],
                             "params": {"hnsw_ef": 64, "exact": False}})
        r.raise_for_status()
        body = r.json()
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["result"][0]["id"], 9)
        self.assertEqual(body["result"][0]["payload"], {"city": "lima"})
        r = httpx.post(f"{URL}/collections/{COLLECTION}/points/search/batch",
                       json={"searches": [{"vector": vector(9), "limit": 2}, {"vector": {"": vector(8)}, "limit": 1}]})
        r.raise_for_status()
        self.assertEqual([len(x) for x in r.json()["result"]], [2, 1])
        self.assertEqual(r.json()["result"][1][0]["id"], 8)

    def test_15_methods_vecshard_lacks_are_refused_by_name(self):
        with self.assertRaises(ERRORS) as e:
            self.client.query_points_groups(COLLECTION, query=vector(1), group_by="city")
        with self.assertRaises(ERRORS) as f:
            self.client.facet(COLLECTION, key="city")
        with self.assertRaises(ERRORS) as g:
            self.client.create_snapshot(COLLECTION)
        if GRPC_PORT:
            # Qdrant's gRPC services answer these, not a bare UNIMPLEMENTED: this run is gRPC.
            for err, named in [(e, "qdrant.Points/QueryGroups (grouped results)"),
                               (f, "qdrant.Points/Facet (facet counts)"),
                               (g, "qdrant.Snapshots/Create (snapshots")]:
                self.assertEqual(err.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
                self.assertIn(named, error_of(err.exception))
        else:
            self.assertIn("groups", error_of(e.exception))
            self.assertIn("facet", error_of(f.exception))
            self.assertIn("snapshots", error_of(g.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
