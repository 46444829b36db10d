"""Socket.IO packets in msgpack, as socket.io-msgpack-parser (notepack.io) writes them."""
from __future__ import annotations

from socketio import msgpack_packet


class NotepackPacket(msgpack_packet.MsgPackPacket):
    """Socket.IO packets in msgpack the way socket.io-msgpack-parser (notepack.io)
    writes and checks them:

    * a field without a value is left out (JavaScript `undefined`), never sent as
      nil: the JavaScript decoder rejects a DISCONNECT whose data is `null`;
    * notepack's `undefined` (fixext 1, type 0) reads as None, and an ArrayBuffer
      or typed array (ext type 0) as bytes. Limit: a one-byte buffer holding 0
      cannot be told from `undefined` and reads as None.
    """

    @staticmethod
    def ext_hook(code, data):
        if code == 0:
            return None if data == b"\x00" else bytes(data)
        return msgpack_packet.msgpack.ExtType(code, data)

    def _to_dict(self):
        d = {"type": self.packet_type, "nsp": self.namespace or "/"}
        if self.data is not None:
            d["data"] = self.data
        if self.id is not None:
            d["id"] = self.id
        return d


#: The serializer of the hub's msgpack endpoint.
MSGPACK_PACKET = NotepackPacket

