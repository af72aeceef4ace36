"""The official qdrant-client against `vecshard-server dev --tls --api-key … --read-only-api-key …`,
over REST and (with VECSHARD_GRPC_PORT set) over gRPC: the client's own `api_key=` and TLS
settings are all it takes. Without a key it is refused (401 / UNAUTHENTICATED), with a wrong
key too, the read-only key searches but cannot write (403 / PERMISSION_DENIED), the read-write
key writes; a client that does not trust the cluster's CA cannot connect.

Run by e2e/qdrant-compat.sh, which starts the server (collection `secure`, 8 dimensions) and
sets VECSHARD_URL (https://), VECSHARD_CA (the dev CA) and, for gRPC,
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH to the same CA (how grpcio is given a CA).
"""

import os
import unittest

import grpc
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

URL = os.environ["VECSHARD_URL"]
CA = os.environ["VECSHARD_CA"]
GRPC_PORT = os.environ.get("VECSHARD_GRPC_PORT")
COLLECTION = "secure"
RW, RO = "rw-key-1", "ro-key-1"


def connect(key, verify=CA) -> QdrantClient:
    options = dict(url=URL, api_key=key, verify=verify, timeout=30, check_compatibility=False)
    if GRPC_PORT:
        options.update(grpc_port=int(GRPC_PORT), prefer_grpc=True)
    return QdrantClient(**options)


def refusal(e: Exception):
    """(HTTP status or gRPC code name) of an error answer."""
    if isinstance(e, grpc.RpcError):
        return e.code().name
    return e.status_code


def point(i: int) -> models.PointStruct:
    return models.PointStruct(id=i, vector=[float((i * 7 + d) % 5) + 0.1 for d in range(8)])


class Security(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        connect(RW).upsert(COLLECTION, points=[point(i) for i in range(20)], wait=True)

    def assert_refused(self, call, http_status, grpc_code):
        with self.assertRaises((UnexpectedResponse, grpc.RpcError)) as e:
            call()
        self.assertEqual(refusal(e.exception), grpc_code if GRPC_PORT else http_status)

    def test_no_key_and_a_wrong_key_are_unauthenticated(self):
        for key in (None, "rw-key-0"):
            client = connect(key)
            self.assert_refused(
                lambda: client.query_points(COLLECTION, query=point(1).vector, limit=3),
                401, "UNAUTHENTICATED")

    def test_the_read_only_key_reads_and_cannot_write(self):
        client = connect(RO)
        hits = client.query_points(COLLECTION, query=point(3).vector, limit=3).points
        self.assertEqual(len(hits), 3)
        self.assertEqual(client.count(COLLECTION, exact=True).count, 20)
        self.assert_refused(lambda: client.upsert(COLLECTION, points=[point(99)]), 403, "PERMISSION_DENIED")
        self.assert_refused(
            lambda: client.delete(COLLECTION, points_selector=models.PointIdsList(points=[1])),
            403, "PERMISSION_DENIED")

    def test_the_read_write_key_writes(self):
        client = connect(RW)
        client.upsert(COLLECTION, points=[point(50)], wait=True)
        self.assertEqual(len(client.retrieve(COLLECTION, ids=[50])), 1)
        client.delete(COLLECTION, points_selector=models.PointIdsList(points=[50]), wait=True)
        self.assertEqual(client.count(COLLECTION, exact=True).count, 20)

    def test_no_connection_without_tls_trust(self):
        if GRPC_PORT:
            # grpcio takes its CA from the environment (set for the whole run): check instead
            # that plaintext gRPC to the TLS port gets nowhere.
            client = QdrantClient(url=URL.replace("https://", "http://"), grpc_port=int(GRPC_PORT),
                                  prefer_grpc=True, https=False, timeout=10,
                                  check_compatibility=False)
            with self.assertRaises(grpc.RpcError) as e:
                client.count(COLLECTION)
            self.assertEqual(e.exception.code().name, "UNAVAILABLE")
        else:
            client = connect(RW, verify=True)  # the system's CAs, not the cluster's
            with self.assertRaises(ResponseHandlingException):
                client.count(COLLECTION)


if __name__ == "__main__":
    unittest.main(verbosity=2)
