"""The worker channel: typed, versioned messages and their codec, shared by both sides."""

from testfleet.protocol.codec import ProtocolError, decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Codec, Message, MessageType

__all__ = [
    "PROTOCOL_VERSION",
    "Codec",
    "Message",
    "MessageType",
    "ProtocolError",
    "decode",
    "encode",
]
