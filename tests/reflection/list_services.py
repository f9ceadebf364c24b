"""Explores a running rxgate through gRPC server reflection, as Python's grpcio-reflection client
does it: that client speaks only grpc.reflection.v1alpha. Prints one line per service the server
lists ("service NAME"), then resolves SERVICE's file descriptor and prints one line per method
("method SERVICE/METHOD").

Usage: list_services.py HOST:PORT CA_PEM CERT_PEM KEY_PEM SERVICE
"""

import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main(target, ca, cert, key, service):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key),
        certificate_chain=read(cert),
    )
    with grpc.secure_channel(target, credentials) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        for name in database.get_services():
            print(f"service {name}")
        descriptor = DescriptorPool(database).FindServiceByName(service)
        for method in descriptor.methods:
            print(f"method {descriptor.full_name}/{method.name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
