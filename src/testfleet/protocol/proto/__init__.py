"""The worker channel's ``.proto`` and the Python code generated from it.

``worker_channel_pb2`` (messages), its ``.pyi`` (their types) and
``worker_channel_pb2_grpc`` (the ``WorkerChannel`` service's stub and
servicer) are written by ``make protos`` (``scripts/generate_protos.py``) and
checked in; never edit them by hand. :mod:`testfleet.protocol.protobuf_codec`
converts between these messages and :mod:`testfleet.protocol.messages`.
"""
