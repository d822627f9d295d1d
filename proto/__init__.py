"""Generated protobuf and gRPC code for Formation's wire contract (see formation.proto).

Do not edit the *_pb2* modules by hand: `make proto` regenerates them.
"""
