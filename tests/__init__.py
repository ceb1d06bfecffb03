import services  # noqa: F401  (first: it turns gRPC's fork handlers off before conftest or a test imports grpc)
