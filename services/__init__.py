"""v2x-suite's services.

gRPC's fork handlers are off in every process that imports the services, set before anything imports grpc. With them
on (grpcio 1.81 and later: grpc/grpc#43055), a child forked while a grpc.aio channel or server polls restarts gRPC's
poller, which fails on the descriptors `subprocess` closes before exec and kills the child before it runs: beside a
busy grpc.aio server, 92 of 300 `subprocess.run` calls that switch user failed here, none with the handlers off. The
runner starts its embedded PostgreSQL and Valkey so, and a test run's `initdb` died of it (signal 11). Nothing here
forks a process that goes on using gRPC (multiprocessing is used with spawn only). An operator's own setting wins.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
